"""Every erasure method's options: one dataclass per method, each field with its help and range check beside it.

Torch-free (the command line builds its flags from these and checks every value before torch is imported); the
methods' modules import their config from here. Defaults are tuned on the world (docs/benchmarks.md); where a
paper's public code uses other values, the class docstring says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ObliviateError
from ..options import Options, Seeded, at_least, fraction, nested, non_negative, one_of, option, positive, share

# the denoiser's parameter sets a method may train (families/: what each names in a family)
DENOISER_SETS = one_of("attn2", "attn2-kv", "attn2-qk", "unet", "non-attn2", "lora", "lora-kv")
PLACEMENTS = ("mid", "mid+up", "all")  # the blocks a prompt memory goes in
TRAIN_ON = one_of("name", "named")

_preserve = option(None, "concepts to keep (default: every other concept of the bench)", metavar="NAMES")
_images = option(None, "images of the concept: 'generate' (the base model's) or a folder (default: the catalog's: "
                       "renderings on the world, base-model generations elsewhere)", metavar="SOURCE")
_train_on = option("named", "prompts trained on: 'name' (the concept's name alone, the authors' scripts) or "
                            "'named' (+ the bench prompts that name it)", TRAIN_ON)


@dataclass
class ESDTarget(Seeded):
    """The options of ESD's target (:func:`obliviate.terms.esd_target`), shared by every method that uses it."""

    eta: float = option(1.0, "strength of the negative guidance in the target", non_negative)
    ddim_steps: int = option(10, "partial-sampling (DDIM) steps to the x_t the loss is taken at", at_least(1))
    start_guidance: float = option(3.0, "classifier-free guidance of the partial sampling", non_negative)


@dataclass
class FMNConfig(Seeded):
    """Forget-Me-Not; the public code's defaults are lr 2e-6, 35 steps, batch 1."""

    steps: int = option(60, "training steps (per concept)", at_least(1))
    lr: float = option(6e-3, "learning rate", positive)
    batch_size: int = option(4, "batch size", at_least(1))
    weight_decay: float = option(0.01, "AdamW weight decay", non_negative)
    trainable: str = option("attn2-qk", "what to edit (docs/methods.md: why q/k)",
                            DENOISER_SETS)
    rank: int = option(4, "LoRA rank with --trainable lora", at_least(1))
    inversion_tokens: int = option(0, "stage A: learn N tokens on the concept's images first, re-steer those "
                                      "(0: off)", at_least(0))
    inversion_steps: int = option(150, "stage A's textual-inversion steps", at_least(1))
    images: str | None = _images
    n_images: int = option(32, "images of the concept to train on", at_least(1))
    include_eot: bool = option(False, "also re-steer the (first) end-of-text token")
    include_context: bool = option(True, "mask from the concept's first token to the end (pads carry it too)")
    preserve_weight: float = option(300.0, "weight of the preservation anchor on the other concepts (lower erases "
                                           "more, keeps less; 0: the paper's loss)", non_negative)
    preserve: tuple[str, ...] | None = _preserve
    lr_decay: bool = option(False, "decay the learning rate linearly to zero")


@dataclass
class RedirectConfig(Seeded):
    """FMN's concept correction: the concept's prompts draw another concept."""

    redirect: str | None = option(None, "the concept the erased concept's prompts draw instead (required)",
                                  metavar="NAME")
    steps: int = option(60, "training steps", at_least(1))
    lr: float = option(3e-3, "learning rate", positive)
    batch_size: int = option(4, "batch size", at_least(1))
    weight_decay: float = option(0.01, "AdamW weight decay", non_negative)
    trainable: str = option("attn2", "what to edit", DENOISER_SETS)
    rank: int = option(4, "LoRA rank with --trainable lora", at_least(1))
    images: str | None = option(None, "images of the redirect concept: 'generate' or a folder (default: the "
                                      "catalog's)", metavar="SOURCE")
    n_images: int = option(32, "images of the redirect concept to train on", at_least(1))
    redirect_weight: float = option(100.0, "weight of the redirect term", non_negative)
    preserve_weight: float = option(100.0, "weight of the preservation anchor on the other concepts",
                                    non_negative)
    preserve: tuple[str, ...] | None = _preserve
    lr_decay: bool = option(True, "decay the learning rate linearly to zero")


@dataclass
class ESDConfig(ESDTarget):
    """ESD; the public code: 200 iterations, batch 1, lr 5e-5, DDIM 50."""

    steps: int = option(100, "training steps", at_least(1))
    lr: float = option(1e-3, "learning rate", positive)
    batch_size: int = option(4, "batch size", at_least(1))
    trainable: str = option("attn2", "what to edit (esd-x: attn2; esd-u: everything else)",
                            DENOISER_SETS)
    x_t_from: str = option("frozen", "which model draws x_t: 'frozen' (kinder to neighbours) or 'edited' (the "
                                     "paper)", one_of("frozen", "edited"))
    train_on: str = _train_on
    clip_grad: float | None = option(None, "gradient-norm clipping (the authors clip nothing)", positive)
    include_last_step: bool = option(False, "also train at x_t after the last sampler step (t = 1; "
                                            "docs/methods.md)")


@dataclass
class UCEConfig(Seeded):
    """UCE's closed form; ``seed`` is unused (every method takes one)."""

    guide: str = option("", "word the concept is mapped onto ('': the prompt without it)", metavar="WORD")
    preserve: tuple[str, ...] | None = _preserve
    lam: float = option(0.1, "ridge pulling the solution towards the original weights", positive)
    erase_scale: float = option(1.0, "weight of the erase rows", non_negative)
    preserve_scale: float = option(1.0, "weight of the preserve rows", non_negative)
    pooled: bool = option(True, "also edit the projection of the pooled text embedding where a family has one "
                                "(SDXL's add_embedding): the other way text enters the UNet; no effect on SD")
    keep_unconditional: bool = option(True, "also keep the empty prompt's vectors, guidance's negative branch "
                                            "(off: UCE's equation as published, the SD world's tables before "
                                            "2026-12-07)")


@dataclass
class RECEConfig(UCEConfig):
    rounds: int = option(3, "rounds of derive-and-erase (the paper: 1 for styles and objects, 2-3 for unsafe "
                            "concepts)", at_least(0))
    reg: float = option(0.01, "ridge on the derived embedding (the paper: 0.1, 1e-3 for styles)", positive)


@dataclass
class InnerAttack(Options):
    """AdvUnlearn's adversary: prefix (or replacing) token embeddings, a few signed-gradient steps per step."""

    tokens: int = option(5, "the adversary's tokens (prefix length, as UnlearnDiffAtk)", at_least(1))
    at: str = option("prefix", "where the adversary's tokens go: the paper's 'prefix', or 'replace' the concept's "
                               "words", one_of("prefix", "replace"))
    steps: int = option(3, "the adversary's steps per training step", at_least(1))
    lr: float = option(0.1, "the adversary's signed step, in units of the token table's standard deviation",
                       positive)


@dataclass
class AdvUnlearnConfig(ESDTarget):
    """AdvUnlearn; the paper: lr 1e-5 on SD's text encoder."""

    steps: int = option(100, "training steps", at_least(1))
    lr: float = option(3e-4, "learning rate", positive)
    batch_size: int = option(4, "batch size", at_least(1))
    trainable: str = option("text-encoder", "what to edit: the text encoder (the paper) or the UNet's attn2",
                            one_of("text-encoder", "attn2"))
    attack: InnerAttack = nested(InnerAttack, "the adversary", prefix="attack_")
    preserve_weight: float = option(3.0, "weight of the retain term on the other concepts (gamma)", non_negative)
    preserve: tuple[str, ...] | None = _preserve
    train_on: str = _train_on


@dataclass
class STEREOConfig(ESDTarget):
    iterations: int = option(3, "stage one: rounds of concept inversion and erasure", at_least(0))
    search_steps: int = option(50, "stage one: ESD steps per round", at_least(1))
    inversion_steps: int = option(150, "textual-inversion steps per round", at_least(1))
    inversion_tokens: int = option(4, "tokens each inversion learns", at_least(1))
    inversion_images: int = option(32, "images of the concept each inversion learns on", at_least(1))
    steps: int = option(150, "stage two: training steps", at_least(1))
    lr: float = option(1e-3, "learning rate", positive)
    batch_size: int = option(4, "batch size", at_least(1))
    anchor_eta: float = option(1.0, "strength of the pull towards the anchor", non_negative)
    anchor: str = option("", "the anchor concept's word ('': the concept's prompt without it)", metavar="WORD")
    trainable: str = option("attn2", "what to edit", DENOISER_SETS)
    preserve_weight: float = option(0.0, "weight of a retain term on the other concepts (not in the paper)",
                                    non_negative)
    preserve: tuple[str, ...] | None = _preserve
    train_on: str = _train_on


@dataclass
class InversionAdversary(Options):
    """A persistent concept-inversion adversary: token embeddings that take Adam steps of inversion's loss
    against the edit before every training step."""

    steps: int = option(3, "the persistent inversion adversary's Adam steps per training step (any of its options "
                           "switches it on)", at_least(1))
    lr: float = option(2e-2, "the persistent inversion adversary's learning rate", positive)
    batch: int = option(4, "the persistent inversion adversary's batch size", at_least(1))


@dataclass
class WeightAdversary(Options):
    """A fine-tuning adversary on the weights: a LoRA of the key-learning attack's shape that keeps fine-tuning
    the edit back toward the concept, restarted from zero every ``reset`` of its steps."""

    steps: int = option(1, "the fine-tuning adversary's Adam steps per training step (any of its options switches "
                           "it on)", at_least(1))
    rank: int = option(16, "the fine-tuning adversary's LoRA rank on every attn2 projection", at_least(1))
    lr: float = option(1e-3, "the fine-tuning adversary's learning rate", positive)
    batch: int = option(4, "the fine-tuning adversary's batch size", at_least(1))
    reset: int = option(100, "the fine-tuning adversary's Adam steps between restarts from zero", at_least(1))


@dataclass
class LetheConfig(Seeded):
    steps: int = option(300, "training steps", at_least(1))
    lr: float = option(1e-4, "learning rate", positive)
    batch_size: int = option(4, "batch size", at_least(1))
    n_images: int = option(32, "images of each concept (and as many anchor images) the forget term noises",
                           at_least(1))
    t_min: float = option(0.1, "the forget term's least noisy level, as a fraction of the schedule", share)
    t_max: float = option(0.7, "the forget term's noisiest level, as a fraction of the schedule", fraction)
    keep_weight: float = option(3.0, "weight of the keep term (every other concept distilled from the frozen "
                                     "model)", non_negative)
    keep_neighbours: float = option(0.0, "share of the keep rows drawn from the erased concepts' own categories",
                                    share)
    neutral_rows: int = option(0, "forget rows per step added under the neutral prompt alone (what diffusion "
                                  "completion denoises with)", at_least(0))
    rounds: int = option(2, "concept-inversion rounds against the edit so far, whose tokens join the forget "
                            "term's conditionings", at_least(0))
    inversion_steps: int = option(150, "textual-inversion steps per round", at_least(1))
    inversion_tokens: int = option(4, "tokens each inversion learns", at_least(1))
    adversary: InversionAdversary | None = nested(InversionAdversary, "a persistent concept-inversion adversary "
                                                  "(off unless one of its options is given)",
                                                  prefix="adversary_", optional=True)
    trainable: str = option("unet", "what to edit", DENOISER_SETS)
    preserve: tuple[str, ...] | None = _preserve

    def check(self) -> None:
        if not self.t_min < self.t_max:
            raise ObliviateError(f"need t_min < t_max, got {self.t_min}, {self.t_max}")


@dataclass
class MemoryTraining(ESDTarget):
    """The learnable prompt's training, shared by erasing (``prompt``) and the paper's hiding design; the paper's
    public runs use m=10, lr 1e-5, 1000 iterations."""

    steps: int = option(200, "training steps", at_least(1))
    lr: float = option(1e-3, "learning rate of the weight edit", positive)
    prompt_lr: float = option(2e-2, "learning rate of the prompt memory", positive)
    batch_size: int = option(4, "batch size", at_least(1))
    tokens: int = option(10, "prompt-memory tokens", at_least(1))
    placement: str = option("all", "attn2 blocks that get the prompt memory", one_of(*PLACEMENTS))
    erase_weight: float = option(1.0, "weight of the erase term (a)", non_negative)
    recall_weight: float = option(0.1, "weight of the recall term (b) (the paper's 0.1)", non_negative)
    include_last_step: bool = option(False, "also train at x_t after the last sampler step (t = 1; "
                                            "docs/methods.md)")
    trainable: str = option("attn2", "what to edit", DENOISER_SETS)
    recall_edits_weights: bool = option(True, "the recall term trains the weights too (the paper); off: the "
                                              "memory only")
    clip_grad: float | None = option(None, "gradient-norm clipping (the paper clips nothing)", positive)


@dataclass
class PromptConfig(MemoryTraining):
    """``--method prompt``: erase with a learnable prompt; the release drops it."""


# Named settings a method offers beside its defaults, each measured (docs/methods.md, docs/benchmarks.md).
PRESETS: dict[str, dict[str, dict]] = {
    "lethe": {
        # held gore, red and zorvik under every attack at seeds 0-2 (gore not at 3-5); loses circle to the prompt
        # searches and striped to completion: for concepts decided in the noisiest steps (colours, gore)
        "early-decided": {"t_max": 0.9, "adversary": {"steps": 3}, "keep_weight": 10.0, "keep_neighbours": 0.5},
    },
}

# Presets chosen per erasure from a probe of the model (obliviate.decided): the named preset where any concept
# erased is decided in the model's noisiest steps, else the method's defaults (docs/methods.md, Lethe).
CHOSEN: dict[str, dict[str, str]] = {"lethe": {"auto": "early-decided"}}
