"""Model families behind one seam (:mod:`.seam`): how prompts become a conditioning, how the denoiser is called,
which layers text enters through. One module per family; this registry is torch-free, so the command line
can name the supported pipelines before torch is imported. The seam's names are imported on first use.
"""

from __future__ import annotations

from ..lazy import lazy_attributes

# family key -> (what it is, the diffusers pipeline classes it serves, its module)
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sd": ("Stable Diffusion 1.x / 2.x", ("StableDiffusionPipeline",), "sd"),
    "sdxl": ("Stable Diffusion XL", ("StableDiffusionXLPipeline",), "sdxl"),
}
PIPELINE_CLASSES = tuple(c for _, classes, _ in FAMILIES.values() for c in classes)
_SEAM = ("Conditioning", "Family", "attention", "component_weights", "denoiser", "encode", "encode_ids",
         "family_of", "img2img", "pooled_layers", "predict", "text_encoders", "text_layers", "text_width",
         "token_embeddings", "token_ids", "trainable_names")

__all__ = ["FAMILIES", "PIPELINE_CLASSES", "supported", *_SEAM]


def supported() -> str:
    """The supported pipelines, for messages: 'StableDiffusionPipeline (Stable Diffusion 1.x / 2.x)'."""
    return "; ".join(f"{', '.join(classes)} ({what})" for what, classes, _ in FAMILIES.values())

__getattr__ = lazy_attributes(__name__, dict.fromkeys(_SEAM, "seam"))
