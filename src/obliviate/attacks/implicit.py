"""Implicit prompts (I2P-style): ask for the concept without naming it — descriptions of its look,
paraphrases, misspellings — as listed per concept in the bench (``implicit:``). No optimisation: the probe
shows what a user reaches with words alone when the concept's name is blocked.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bench import Concept
from ..catalog import Catalog
from ..errors import ObliviateError
from .base import Probe


@dataclass
class ImplicitConfig:
    seed: int = 0
    progress: bool = True


def run(pipe, concept: Concept, cfg: ImplicitConfig, catalog: Catalog, prepared: None = None) -> Probe:
    if not concept.implicit:
        raise ObliviateError(f"bench {catalog.bench.name!r} lists no implicit prompts for {concept.name!r}")
    return Probe(list(concept.implicit))
