"""M-Score: the rate at which the detector recognises a concept in images made from prompts asking for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..generate import generate, image_seeds
from ..pipeline import Model
from .bench import BenchConcept


@dataclass
class ConceptImages:
    concept: BenchConcept
    prompts: list[str]
    seeds: list[int]
    images: np.ndarray


def concept_requests(concept: BenchConcept, n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` (prompt, seed) pairs: prompts cycled, seeds fixed by ``seed`` so every model gets the same noise."""
    prompts = [concept.prompts[i % len(concept.prompts)] for i in range(n)]
    return prompts, image_seeds(seed, n)


def generate_concepts(model: Model, concepts: list[BenchConcept], n: int, seed: int,
                      progress: bool = True) -> list[ConceptImages]:
    """Images of every concept, generated in large batches across concepts (fast on CPU)."""
    prompts: list[str] = []
    seeds: list[int] = []
    for c in concepts:
        p, s = concept_requests(c, n, seed)
        prompts += p
        seeds += s
    images = generate(model, prompts, seeds, progress=progress)
    return [ConceptImages(c, prompts[i * n:(i + 1) * n], seeds[i * n:(i + 1) * n], images[i * n:(i + 1) * n])
            for i, c in enumerate(concepts)]


def m_scores(detector, sets: list[ConceptImages]) -> dict[str, float]:
    """M-Score per concept name."""
    return {s.concept.name: float(np.mean(detector.hits(s.images, s.concept))) for s in sets}
