"""Image generation with per-image seeds, so image i is the same whatever the batch it falls in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .diffusion import image_size
from .errors import ObliviateError
from .families import call_options
from .io import write_atomic
from .progress import bar


def image_seeds(seed: int, n: int) -> list[int]:
    """The seeds of images 0..n-1 of a run with ``seed`` (the same for base and edited models)."""
    return [seed * 1_000_003 + i for i in range(n)]


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch_size: int = 64,
             progress: bool = True, desc: str = "images") -> np.ndarray:
    """Generate one image per (prompt, seed) pair with the pipeline's own sampler; returns uint8 (N, H, W, 3).

    Noise comes from one CPU generator per image, so image i is the same whatever batch or device it is made on.
    The progress bar counts images and moves with every sampler step, so its ETA appears within seconds.
    """
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt")
    if any(not p.strip() for p in prompts):
        raise ObliviateError("empty prompt")
    out, size = [], image_size(pipe)  # the family's default size, said outright (Flux's pipeline has no config of it)
    options = call_options(pipe)
    with bar(total=len(prompts), desc=desc, unit="img", enabled=progress, whole=True) as images_bar:
        for start in range(0, len(prompts), batch_size):
            chunk = slice(start, start + batch_size)
            share = len(prompts[chunk]) / steps

            def advance(_pipe, _i, _t, kwargs, share=share):
                images_bar.update(share)
                return kwargs

            gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[chunk]]
            images = pipe(prompts[chunk], generator=gens, num_inference_steps=steps, guidance_scale=guidance,
                          height=size, width=size, output_type="np", **options,
                          callback_on_step_end=advance if progress else None).images
            images_bar.update(min(start + batch_size, len(prompts)) - images_bar.n)  # whole images, no drift
            out.append(np.round(np.clip(images, 0, 1) * 255).astype(np.uint8))
    return np.concatenate(out)


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images (N, H, W, 3) into one array, white gutters between them."""
    n, h, w, _ = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return canvas


def save_png(image: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write a PNG atomically, optionally upscaled (nearest) so 32-px images are visible."""
    pil = Image.fromarray(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return write_atomic(path, lambda tmp: pil.save(tmp, format="PNG"))
