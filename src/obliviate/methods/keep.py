"""What a distillation anchor keeps: the other concepts' prompts, with images of their own concepts where the
catalog renders them (FMN's and redirect's anchor, hiding's preservation terms)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import encode_prompts, images_to_latents, seed_stream


@dataclass
class KeepBank:
    """Prompts of the concepts to keep, each with a clean latent to noise (None: noise the target's) and the
    category of its concept."""

    cond: torch.Tensor
    latents: torch.Tensor | None
    prompts: list[str]
    categories: list[str]


def keep_bank(pipe, catalog: Catalog, erased: list[Concept], names: tuple[str, ...] | None, seed: int) \
        -> KeepBank | None:
    """What a distillation anchor keeps: every prompt of the kept concepts that names no erased word, with
    an image of its own concept where the catalog renders images for free."""
    kept = catalog.keep(erased, names)
    words = {w for c in erased for w in c.words}
    pairs = [(k, p) for k in kept for p in k.prompts if not words & set(p.split())]
    if not pairs:
        return None
    latents = None
    if catalog.renders:  # generating images of every kept concept would cost minutes on a real model
        images = {k.name: catalog.images(pipe, k, len(k.prompts), seed_stream(seed, f"keep/{k.name}"))
                  for k in kept}
        seen: dict[str, int] = {}
        rows = []
        for k, _ in pairs:
            i = seen.get(k.name, 0)
            seen[k.name] = i + 1
            rows.append(images[k.name][i % len(images[k.name])])
        latents = images_to_latents(pipe, np.stack(rows))
    prompts = [p for _, p in pairs]
    return KeepBank(encode_prompts(pipe, prompts), latents, prompts, [k.category for k, _ in pairs])
