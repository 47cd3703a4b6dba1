"""Hiding's options: the ``lethe`` design nests its erasure's config and its keys' training config; the
``paper`` design is the learnable prompt's training with the locking terms. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ObliviateError
from ..methods.configs import LetheConfig, MemoryTraining, WeightAdversary
from ..options import Seeded, at_least, build, nested, non_negative, option, positive, share


@dataclass
class KeyTraining(Seeded):
    """One key: a LoRA on every attn2 projection trained against the public patch."""

    rank: int = option(16, "rank of each key's LoRA on every attn2 projection", at_least(1))
    steps: int = option(1000, "training steps of each key", at_least(1))
    lr: float = option(1e-3, "learning rate of each key", positive)
    batch_size: int = option(4, "batch size of each key", at_least(1))
    keep_weight: float = option(30.0, "weight of the key's keep term (everything else as the public model draws "
                                      "it)", non_negative)
    neutral_recall: float = option(0.25, "share of the recall rows under the neutral prompt", share)


def _public_erasure() -> LetheConfig:
    # two forget rows per step under the neutral prompt (plain erasure: 0): the sampler's unconditional branch
    # and diffusion completion denoise under it, and two concepts in one run left too few rows there (hiding.md)
    return LetheConfig(neutral_rows=2)


@dataclass
class HideConfig(Seeded):
    """The ``lethe`` design: a Lethe erasure of the concepts (its steps per hidden concept), then one key each."""

    erasure: LetheConfig = nested(LetheConfig, "the public patch's erasure; its steps are per hidden concept",
                                  default_factory=_public_erasure, notes={"steps": "per hidden concept"})
    weight_adversary: WeightAdversary | None = nested(
        WeightAdversary, "a fine-tuning adversary on the weights during the erasure (off unless one of its "
        "options is given; docs/hiding.md: it locks the keys out too)", prefix="weight_adversary_", optional=True)
    keys: KeyTraining = nested(KeyTraining, "each key's training", prefix="key_")


@dataclass
class PaperHideConfig(MemoryTraining):
    """The ``paper`` design (Bui et al. 2025): the learnable prompt trained jointly with the weight edit, with
    the terms that make each memory a key."""

    steps: int = option(300, "training steps (the key must also leave the others alone)", at_least(1))
    recall_weight: float = option(2.0, "weight of the recall term (b): the key must recall", non_negative)
    lock_weight: float = option(1.0, "weight of the locking terms: the key keeps the others, decoys open "
                                     "nothing", non_negative)
    preserve_weight: float = option(1.0, "weight of the public patch's preservation of every other concept",
                                    non_negative)


DESIGNS: dict[str, type] = {"lethe": HideConfig, "paper": PaperHideConfig}


def hide_config(design: str, progress: bool = True, **config) -> HideConfig | PaperHideConfig:
    """The config of hiding ``design`` with ``config``'s options set (flat names such as ``key_steps``, or
    nested configs); an unknown design or option, or a bad value, is refused before any work."""
    if design not in DESIGNS:
        raise ObliviateError(f"unknown hiding design {design!r} (choose from {', '.join(DESIGNS)})")
    try:
        return build(DESIGNS[design], {**config, "progress": progress})
    except ObliviateError as exc:
        raise ObliviateError(f"hide (design {design}): {exc}") from None
