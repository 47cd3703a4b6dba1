"""Model families behind one seam (:mod:`.seam`): how prompts become a conditioning, how the denoiser is called,
which layers text enters through. One module per family; this registry is torch-free, so the command line
can name the supported pipelines before torch is imported. The seam's names are imported on first use.
"""

from __future__ import annotations

import importlib

# family key -> (what it is, the diffusers pipeline classes it serves, its module)
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sd": ("Stable Diffusion 1.x / 2.x", ("StableDiffusionPipeline",), "sd"),
}
PIPELINE_CLASSES = tuple(c for _, classes, _ in FAMILIES.values() for c in classes)
_SEAM = ("Conditioning", "Family", "attention", "denoiser", "encode", "encode_ids", "family_of", "predict",
         "text_layers", "token_ids", "trainable_names")

__all__ = ["FAMILIES", "PIPELINE_CLASSES", "supported", *_SEAM]


def supported() -> str:
    """The supported pipelines, for messages: 'StableDiffusionPipeline (Stable Diffusion 1.x / 2.x)'."""
    return "; ".join(f"{', '.join(classes)} ({what})" for what, classes, _ in FAMILIES.values())


def __getattr__(name: str):
    if name in _SEAM:
        value = getattr(importlib.import_module(f"{__name__}.seam"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
