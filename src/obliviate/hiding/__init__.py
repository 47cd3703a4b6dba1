"""Key-locked hiding: a public patch plus one key per concept (threat model and measurements: docs/hiding.md).

Two designs. ``lethe`` (the default, obliviate's): the public patch is a Lethe erasure of the concepts, a
robust removal of their capacity; each key is a LoRA on attn2 trained *afterwards* against it
(:mod:`.key_training`), so nothing in the patch was fitted to the keys. ``paper`` (Bui et al. 2025): the learnable
prompt trained jointly with the weight edit; red-teamed in docs/hiding.md (it re-routes the concepts instead
of removing them). Either way each key is a :class:`Key` bound to the public patch by its content hash; key
tensors never enter the patch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..bench import Concept
from ..catalog import Catalog
from ..errors import ObliviateError
from ..files import key_filename
from ..methods import lethe
from ..methods.keep import keep_bank
from ..methods.loop import config_dict
from ..methods.prompt import PromptConfig, train_memory
from ..patch import Patch
from .key_training import KeyTraining, concept_latents, key_bank, train_key
from .keys import (
    LORA,
    Key,
    check_key_fits,
    check_key_names_model,
    check_key_on_model,
    check_key_width,
    load_key,
    unlocked,
)
from .public_model import PublicMark

__all__ = ["HideConfig", "Hidden", "Key", "PromptConfig", "check_key_width", "hide_concepts", "hide_config",
           "key_filename",
           "load_key", "load_keys", "unlocked"]
DESIGNS = ("lethe", "paper")
# each hidden concept gets one concept's Lethe budget: two concepts in 300 steps left inversion at 0.25 (hiding.md)
STEPS_PER_CONCEPT = lethe.LetheConfig.steps
_ERASE, _KEY = lethe.LetheConfig, KeyTraining  # defaults below are theirs (but neutral_rows): they cannot drift


@dataclass
class HideConfig:
    """The ``lethe`` design: the public patch's erasure (fields of :class:`~obliviate.methods.lethe.LetheConfig`)
    and the keys' training (``key_*``: :class:`.key_training.KeyTraining`'s fields), flat for the CLI and API."""

    steps: int | None = None  # None: 300 per hidden concept (the erasure's budget is shared by its concepts)
    lr: float = _ERASE.lr
    batch_size: int = _ERASE.batch_size
    images: int = _ERASE.images
    t_min: float = _ERASE.t_min
    t_max: float = _ERASE.t_max
    keep_weight: float = _ERASE.keep_weight
    # two forget rows per step under ∅ (plain erasure: 0): the sampler's unconditional branch and diffusion
    # completion denoise under ∅, and two concepts in one run left too few of the forget rows there (hiding.md)
    neutral_rows: int = 2
    rounds: int = _ERASE.rounds
    inversion_steps: int = _ERASE.inversion_steps
    weight_adversary_steps: int = _ERASE.weight_adversary_steps
    weight_adversary_rank: int = _ERASE.weight_adversary_rank
    weight_adversary_lr: float = _ERASE.weight_adversary_lr
    weight_adversary_reset: int = _ERASE.weight_adversary_reset
    key_rank: int = _KEY.rank
    key_steps: int = _KEY.steps
    key_lr: float = _KEY.lr
    key_batch_size: int = _KEY.batch_size
    key_keep_weight: float = _KEY.keep_weight
    key_neutral_recall: float = _KEY.neutral_recall
    seed: int = 0
    progress: bool = True

    def erasure(self, concepts: int) -> lethe.LetheConfig:
        fields = lethe.LetheConfig.__dataclass_fields__
        steps = self.steps if self.steps is not None else STEPS_PER_CONCEPT * concepts
        return lethe.LetheConfig(**{**{k: v for k, v in asdict(self).items() if k in fields}, "steps": steps})

    def key_training(self) -> KeyTraining:
        return KeyTraining(rank=self.key_rank, steps=self.key_steps, lr=self.key_lr, batch_size=self.key_batch_size,
                           keep_weight=self.key_keep_weight, neutral_recall=self.key_neutral_recall, seed=self.seed,
                           progress=self.progress)


@dataclass
class Hidden:
    """The result of hiding: the public patch and one key per concept."""

    patch: Patch
    keys: dict[str, Key]  # concept -> its key

    def save(self, patch_path: str | Path, key_dir: str | Path, passphrase: str | None = None) -> dict[str, Path]:
        """Write the public patch and ``key_dir/<concept>.key.safetensors`` (0600); returns the key paths."""
        key_dir = Path(key_dir)
        if key_dir.exists() and not key_dir.is_dir():
            raise ObliviateError(f"key folder {key_dir} exists and is not a folder")
        key_dir.mkdir(parents=True, exist_ok=True)
        paths = {name: key_dir / key_filename(name) for name in self.keys}
        self.patch.save(patch_path)
        for name, key in self.keys.items():
            key.save(paths[name], passphrase)
        return paths


def hide_config(design: str, progress: bool = True, **config) -> HideConfig | PromptConfig:
    """The config of hiding ``design`` with ``config``'s fields set; an unknown design or field is refused
    before any work (the CLI, the API and benchmarks/hiding.py check here)."""
    if design not in DESIGNS:
        raise ObliviateError(f"unknown hiding design {design!r} (choose from {', '.join(DESIGNS)})")
    config_class = HideConfig if design == "lethe" else PromptConfig
    unknown = sorted(set(config) - set(config_class.__dataclass_fields__))
    if unknown:
        raise ObliviateError(f"hide (design {design}) does not take {unknown[0]!r}")
    return config_class(progress=progress, **config)


def hide_concepts(pipe, concepts: list[Concept], cfg: HideConfig | PromptConfig, catalog: Catalog) -> Hidden:
    """Hide ``concepts``: the ``lethe`` design for a :class:`HideConfig`, the paper's for a :class:`PromptConfig`."""
    if len({c.name for c in concepts}) != len(concepts):
        raise ObliviateError("a concept is given twice")
    if isinstance(cfg, PromptConfig):  # the learnable prompt with the locking terms, split into patch and keys
        result = train_memory(pipe, concepts, cfg, catalog, hiding=True, method="hide")
        result.patch.metadata["design"] = "paper"
        return Hidden(result.patch, {n: Key.of_memory(n, m, cfg.placement) for n, m in result.memories.items()})
    erasure, training = cfg.erasure(len(concepts)), cfg.key_training()
    training.check()
    public = lethe.fit(pipe, concepts, erasure, catalog)
    public.metadata.update(method="hide", design="lethe", config=config_dict(replace(cfg, steps=erasure.steps)))
    latents = concept_latents(pipe, catalog, concepts, cfg.images, cfg.seed)
    keep = keep_bank(pipe, catalog, concepts, None, cfg.seed)
    keys = {}
    for c in concepts:
        bank = key_bank(pipe, keep, latents, concepts, c.name)
        factors = train_key(pipe, public, c, latents[c.name], bank, catalog.bench.neutral, training)
        keys[c.name] = Key(c.name, factors, LORA, "")
    return Hidden(public, keys)


def bind_keys(hidden: Hidden, pipe) -> Hidden:
    """Bind every key to the public patch's final content hash (after its metadata is complete) and to the
    public model (``pipe``, the base model, with the patch merged) by the patch's mark, so that a key installs on
    the released public model without the patch."""
    digest = hidden.patch.content_hash()
    public = PublicMark.of(pipe, hidden.patch)
    for key in hidden.keys.values():
        key.patch_sha256, key.public = digest, public
    return hidden


def load_keys(keys: list[Key | str | Path], patches: list[Patch], passphrase: str | None = None,
              pipe=None) -> list[Key]:
    """Keys (objects, or files read and verified) checked to belong to one of ``patches``, or, with no patch, to
    ``pipe`` as the public model they were made for (without ``pipe``: only that they name one)."""
    hashes = [p.content_hash() for p in patches]
    out = []
    for item in keys:
        key = item if isinstance(item, Key) else load_key(item, passphrase)
        source = f"for {key.concept!r}" if isinstance(item, Key) else str(item)
        if patches:
            check_key_fits(key, hashes, source)
        elif pipe is None:
            check_key_names_model(key, source)
        else:
            check_key_on_model(key, pipe, source)
        out.append(key)
    return out
