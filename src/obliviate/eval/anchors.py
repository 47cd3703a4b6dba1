"""Anchor images of a concept: what inversion-based metrics and attacks learn from.

On the world they are ground-truth renderings; on any other model, the base model's own generations
(FMN inverted the same anchor images in the original and the forgetting model).
"""

from __future__ import annotations

import numpy as np

from ..generate import generate, image_seeds
from ..pipeline import Model
from .bench import Bench, BenchConcept


def anchor_images(model: Model, bench: Bench, concept: BenchConcept, n: int, seed: int) -> np.ndarray:
    if bench.detector == "world":
        from ..world import domain

        rng = np.random.default_rng(seed + 7919)
        wc = domain.concept_by_name(concept.name)
        return domain.render_batch([domain.scene_for(wc, rng) for _ in range(n)])
    prompts = [concept.prompts[i % len(concept.prompts)] for i in range(n)]
    return generate(model, prompts, image_seeds(seed + 1, n), progress=False)
