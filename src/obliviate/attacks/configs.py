"""Every attack's options: one dataclass per attack, each field with its help and range check beside it.

Torch-free, like the methods' configs: the command line builds ``obliviate attack``'s flags from these and checks
every value before torch is imported. An option given on the command line goes to every chosen attack that
takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..methods.configs import PLACEMENTS
from ..options import Seeded, at_least, each, fraction, one_of, option, positive


def _source(default: str | None) -> str | None:
    what = "the catalog's" if default is None else "the base model's generations"
    return option(default, f"images of the concept the attack starts from: 'generate' (the base model's), or a "
                           f"folder (default: {what})", metavar="SOURCE")


@dataclass
class InversionAttackConfig(Seeded):
    n_tokens: int = option(4, "tokens learned (inversion) or searched (prompt attacks)", at_least(1))
    steps: int = option(150, "optimisation budget", at_least(1))
    lr: float = option(2e-2, "learning rate", positive)
    anchors: int = option(32, "images of the concept the attack learns on", at_least(1))
    images: str | None = _source(None)


@dataclass
class PromptSearch(Seeded):
    """The hard-prompt search both UnlearnDiffAtk and P4D run (:mod:`.prompt_search`), on base-model images."""

    steps: int = option(300, "optimisation budget", at_least(1))
    lr: float = option(0.1, "learning rate", positive)
    batch_size: int = option(8, "batch size", at_least(1))
    anchors: int = option(16, "images of the concept the loss is taken on", at_least(1))
    images: str | None = _source("generate")


@dataclass
class UnlearnDiffConfig(PromptSearch):
    n_tokens: int = option(5, "prefix tokens (the paper's length)", at_least(1))


@dataclass
class P4DConfig(PromptSearch):
    n_tokens: int = option(8, "free prompt tokens (clipped to the tokenizer's length)", at_least(1))
    points: int = option(64, "(x_t, t, base prediction) triples matched", at_least(1))


@dataclass
class RingABellConfig(Seeded):
    n_tokens: int = option(16, "prompt length (the paper's; clipped to the tokenizer's)", at_least(1))
    alpha: float = option(2.0, "strength of the concept vector (3 overshoots into neighbouring concepts)", positive)
    population: int = option(64, "genetic search: population", at_least(2))
    steps: int = option(200, "genetic search: generations", at_least(1))
    mutation: float = option(0.1, "chance that a token is resampled", fraction)
    n_prompts: int = option(4, "the fittest distinct prompts returned", at_least(1))


@dataclass
class ImplicitConfig(Seeded):
    """No options: the bench lists the prompts."""


@dataclass
class CompletionConfig(Seeded):
    strengths: tuple[float, ...] = option((0.3, 0.5, 0.7), "fractions of the schedule the images are noised to",
                                          each(fraction), metavar="FRACTIONS")
    anchors: int = option(16, "distinct images of the concept to start from", at_least(1))
    images: str | None = _source("generate")


RELEARN_FORMS = ("lora", "cross-attention", "memory")


@dataclass
class RelearnConfig(Seeded):
    """Fine-tuning the model under test on images of the concept (:mod:`.relearn`)."""

    form: str = option("lora", "what is trained: a rank-r LoRA on every attn2 projection (a hiding key's shape), "
                               "every attn2 weight itself (full cross-attention fine-tuning), or a prompt memory "
                               "(the paper's keys)", one_of(*RELEARN_FORMS))
    rank: int = option(16, "LoRA rank (form lora)", at_least(1))
    tokens: int = option(10, "memory tokens (form memory)", at_least(1))
    placement: str = option("all", "attn2 blocks that get the memory (form memory)", one_of(*PLACEMENTS))
    steps: int = option(300, "optimisation budget", at_least(1))
    lr: float | None = option(None, "learning rate (default: 1e-3 for a LoRA, 1e-4 for cross-attention, 2e-2 for "
                                    "a memory)", positive)
    batch_size: int = option(8, "batch size", at_least(1))
    check_every: int = option(25, "steps between measurements of the concept's rate", at_least(1))
    anchors: int = option(32, "images of the concept the attacker fine-tunes on (N)", at_least(1))
    images: str | None = _source(None)


@dataclass
class MemoryAttackConfig(RelearnConfig):
    """The key-learning attack: relearning in a hiding key's shape (a prompt memory by default)."""

    form: str = option("memory", "the learned key's shape: a prompt memory (the paper's keys) or a LoRA on every "
                                 "attn2 projection (the keys of hide --design lethe)", one_of("memory", "lora"))
