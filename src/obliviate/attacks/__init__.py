"""Attacks (red teaming): each a config dataclass, an optional ``prepare`` on the base model and
``run(pipe, concept, cfg, catalog, prepared) -> Probe``; a registry, and :func:`run_attack` (in :mod:`.run`),
which measures an attack's success rate on the model under test and on the base model.

The registry names each attack's module instead of importing it, so listing attacks and checking their
options needs no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ObliviateError
from ..options import build, flat_fields
from . import configs

__all__ = ["ATTACKS", "Attack", "AttackResult", "Probe", "attack_configs", "attack_names", "with_keys", "get_attack",
           "run_attack"]


def _load(path: str):
    """``"module:name"`` inside this package -> the object."""
    module, name = path.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


@dataclass(frozen=True)
class Attack:
    name: str
    module: str  # obliviate.attacks.<module>: its ``run``
    config: type  # in :mod:`.configs`
    summary: str
    prepare_at: str | None = None  # "module:function" that runs on the base model before the edit is in place

    @property
    def run(self) -> Callable:
        return _load(f"{self.module}:run")

    @property
    def prepare(self) -> Callable | None:
        return _load(self.prepare_at) if self.prepare_at else None

    def option_names(self) -> set[str]:
        return {f.name for f in flat_fields(self.config)}

    def make_config(self, **overrides):
        unknown = sorted(set(overrides) - self.option_names())
        if unknown:
            raise ObliviateError(f"attack {self.name} does not take {unknown[0]!r} "
                                 f"(it takes: {', '.join(sorted(self.option_names()))})")
        try:
            return build(self.config, overrides)
        except ObliviateError as exc:
            raise ObliviateError(f"attack {self.name}: {exc}") from None


ATTACKS: dict[str, Attack] = {a.name: a for a in [
    Attack("inversion", "inversion", configs.InversionAttackConfig,
           "concept inversion: learn new tokens on images of the concept against the model", "base:prepare_anchors"),
    Attack("unlearndiff", "unlearndiff", configs.UnlearnDiffConfig,
           "UnlearnDiffAtk: prefix tokens that make the model denoise the concept's images well",
           "base:prepare_anchors"),
    Attack("p4d", "p4d", configs.P4DConfig,
           "P4D: a prompt under which the model predicts the base model's noise for the concept", "p4d:prepare"),
    Attack("ringabell", "ringabell", configs.RingABellConfig,
           "Ring-A-Bell: tokens near the concept's text-embedding direction (genetic search, model-agnostic)",
           "ringabell:prepare"),
    Attack("implicit", "implicit", configs.ImplicitConfig,
           "the bench's implicit prompts: descriptions, misspellings, never the concept's name"),
    Attack("completion", "completion", configs.CompletionConfig,
           "diffusion completion: the concept's images noised to 0.3/0.5/0.7, denoised neutrally",
           "base:prepare_anchors"),
    Attack("relearn", "relearn", configs.RelearnConfig,
           "relearning: fine-tune the model on N images of the concept (a LoRA, all of cross-attention or a prompt "
           "memory); steps until the concept is back", "base:prepare_anchors"),
    Attack("memory", "relearn", configs.MemoryAttackConfig,
           "key learning: relearning in a hiding key's shape (a fresh prompt memory by default)",
           "base:prepare_anchors"),
]}


def get_attack(name: str) -> Attack:
    if name not in ATTACKS:
        raise ObliviateError(f"unknown attack {name!r} (available: {', '.join(ATTACKS)}, or all)")
    return ATTACKS[name]


def attack_names(attacks: str | Sequence[str] | None) -> list[str]:
    """Attack names from "all", a name, "a,b" or a list; each checked."""
    if attacks is None:
        return []
    if attacks == "all":
        return list(ATTACKS)
    names = [a.strip() for a in attacks.split(",")] if isinstance(attacks, str) else list(attacks)
    if not names or not all(names):
        raise ObliviateError(f"empty attack name in {attacks!r} (give names separated by commas, or all)")
    return [get_attack(a).name for a in names]


def attack_configs(attacks: list, options: dict, seed: int = 0, progress: bool = True) -> list:
    """Each attack's config with the ``options`` it takes; an option no chosen attack takes is an error."""
    unused = sorted(set(options) - set().union(*(a.option_names() for a in attacks)))
    if unused:
        raise ObliviateError(f"no chosen attack takes {unused[0]!r}")
    return [a.make_config(seed=seed, progress=progress, **{k: v for k, v in options.items()
                                                           if k in a.option_names()}) for a in attacks]


LEARNING = ("relearn", "memory")  # attacks that fine-tune the public model: what a key holder needs no attack for


def with_keys(names: list[str], requested, keys: Sequence) -> list[str]:
    """The attacks that run with ``keys`` installed. The relearning attacks learn in the key's place, so they
    attack the public model only: "all" leaves them out when keys are given, naming one is an error."""
    if not keys or not set(LEARNING) & set(names):
        return names
    if requested == "all":
        return [n for n in names if n not in LEARNING]
    raise ObliviateError("the relearning attacks (relearn, memory) attack the public model: run them without keys")


def __getattr__(name: str):
    if name == "run_attack":
        return _load("run:run_attack")
    if name in ("AttackResult", "Probe"):
        return _load(f"base:{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
