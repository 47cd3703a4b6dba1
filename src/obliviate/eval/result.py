"""The typed result of an evaluation; ``to_dict()`` / ``to_json()`` give the documented JSON schema."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field

from .. import __version__


@dataclass
class PromptScore:
    """One prompt's M-Score, base and edited (erasure often holds for one phrasing and not another)."""

    prompt: str
    m_base: float
    m: float
    n_images: int
    interval: tuple[float, float]  # 95% Wilson interval of m
    base_interval: tuple[float, float]  # ... of m_base (same number of images)


@dataclass
class Elsewhere:
    """Where a target went: how often the detector finds it in images of the *other* concepts' prompts."""

    m_base: float
    m: float
    n_images: int
    interval: tuple[float, float]  # 95% Wilson interval of m
    base_interval: tuple[float, float]  # ... of m_base
    by_concept: dict[str, tuple[float, float]]  # whose prompts -> (base, edited) rate, where either is above 0


@dataclass
class ConceptScore:
    name: str
    category: str
    m_base: float
    m: float
    n_images: int
    interval: tuple[float, float]       # 95% Wilson interval of m
    base_interval: tuple[float, float]  # ... of m_base
    prompts: list[PromptScore] = field(default_factory=list)
    efficacy: float | None = None  # targets only: 1 - m / m_base
    elsewhere: Elsewhere | None = None  # targets only


@dataclass
class CategoryScore:
    """The mean over a category's concepts: with equal images per concept, the rate over all their images."""

    m_base: float
    m: float
    n_images: int
    interval: tuple[float, float]  # 95% Wilson interval of m over the n_images
    base_interval: tuple[float, float]  # ... of m_base


@dataclass
class Drift:
    frechet: float
    mean_feature_distance: float


@dataclass
class ModelInfo:
    name: str
    fingerprint: str
    device: str
    dtype: str


@dataclass
class EvalResult:
    model: ModelInfo
    patch: dict | None  # the patch's metadata (several patches: method "a+b", their metadata under "patches")
    seed: int
    bench: str
    sampler: dict  # {"steps": ..., "guidance": ...}
    concepts: list[ConceptScore]
    categories: dict[str, CategoryScore]
    targets: list[str] | None = None
    efficacy: float | None = None
    preservation: float | None = None
    neighbour_preservation: float | None = None
    worst_preserved: dict | None = None  # {"concept", "preservation"}: the kept concept that lost the most
    h: float | None = None
    drift: Drift | None = None
    inversion: dict[str, float] | None = None
    keys: list[str] | None = None  # concepts whose keys were installed
    attacks: dict[str, list] | None = None  # target -> [AttackResult, ...] (eval --attacks)
    oracle: EvalResult | None = None  # the oracle (the world retrained without the targets) evaluated as their erasure
    seconds: float = 0.0
    obliviate_version: str = __version__  # the version that measured (a patch records the one that made it)

    def concept(self, name: str) -> ConceptScore:
        for c in self.concepts:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        attacks, oracle = self.attacks, self.oracle
        data = asdict(dataclasses.replace(self, attacks=None, oracle=None))
        if attacks is not None:
            data["attacks"] = {t: [r.to_dict() for r in rs] for t, rs in attacks.items()}
        if oracle is not None:
            data["oracle"] = oracle.to_dict()
        for key in ("inversion", "keys", "attacks", "oracle"):  # absent unless measured, as documented
            if data[key] is None:
                del data[key]
        for c in data["concepts"]:
            if c["elsewhere"] is None:
                del c["elsewhere"]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)
