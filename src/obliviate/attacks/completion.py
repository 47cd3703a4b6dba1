"""The diffusion-completion probe (Lu et al., "When Are Concepts Erased From Diffusion Models?", NeurIPS 2025):
take images of the concept, noise them to a fraction tau of the schedule, and denoise with a prompt that asks
for nothing in particular:

    x_tau = sqrt(a_tau) x0 + sqrt(1 - a_tau) eps,   x0' = denoise_theta'(x_tau, c_neutral)

A model that still holds the concept completes it from the partial evidence; one that lost it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bench import Concept
from ..catalog import Catalog
from ..errors import ObliviateError
from .base import Probe


@dataclass
class CompletionConfig:
    strengths: tuple[float, ...] = (0.3, 0.5, 0.7)  # fractions of the schedule the images are noised to
    anchors: int = 16  # distinct images of the concept to start from
    images: str | None = "generate"  # the base model's own images of it: on its manifold, so it completes them
    seed: int = 0
    progress: bool = True


def run(pipe, concept: Concept, cfg: CompletionConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    if not cfg.strengths or not all(0 < s <= 1 for s in cfg.strengths):
        raise ObliviateError(f"completion strengths must be in (0, 1], got {cfg.strengths}")
    return Probe([catalog.bench.neutral], init_images=images, strengths=tuple(cfg.strengths),
                 neutral=catalog.bench.neutral)
