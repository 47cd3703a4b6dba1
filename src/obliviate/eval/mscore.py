"""M-Score: the rate at which the detector recognises a concept in images made from prompts asking for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bench import Concept, Sampler
from ..generation import generate, image_seeds


@dataclass
class ConceptImages:
    concept: Concept
    prompts: list[str]
    seeds: list[int]
    images: np.ndarray


def concept_requests(concept: Concept, n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` (prompt, seed) pairs: prompts cycled, seeds fixed by ``seed`` so every model gets the same noise."""
    prompts = [concept.prompts[i % len(concept.prompts)] for i in range(n)]
    return prompts, image_seeds(seed, n)


def generate_concepts(pipe, concepts: list[Concept], n: int, seed: int, sampler: Sampler,
                      progress: bool = True, desc: str = "images") -> list[ConceptImages]:
    """Images of every concept, generated in large batches across concepts (fast on CPU)."""
    prompts: list[str] = []
    seeds: list[int] = []
    for c in concepts:
        p, s = concept_requests(c, n, seed)
        prompts += p
        seeds += s
    images = generate(pipe, prompts, seeds, sampler.steps, sampler.guidance, progress=progress, desc=desc)
    return [ConceptImages(c, prompts[i * n:(i + 1) * n], seeds[i * n:(i + 1) * n], images[i * n:(i + 1) * n])
            for i, c in enumerate(concepts)]


def m_scores(detector, sets: list[ConceptImages]) -> dict[str, float]:
    """M-Score per concept name."""
    return {s.concept.name: float(np.mean(detector.hits(s.images, s.concept))) for s in sets}
