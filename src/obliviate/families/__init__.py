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
    "sd3": ("Stable Diffusion 3", ("StableDiffusion3Pipeline",), "sd3"),
    "flux": ("Flux", ("FluxPipeline",), "flux"),
}
PIPELINE_CLASSES = tuple(c for _, classes, _ in FAMILIES.values() for c in classes)
_SEAM = ("Conditioning", "Family", "Segment", "attention", "call_options", "component_weights", "denoiser",
         "encode", "encode_ids", "family_of", "img2img", "pooled_layers", "predict", "prompt_call", "segments",
         "text_encoders", "text_layers", "text_width", "token_embeddings", "token_ids", "trainable_names")

__all__ = ["FAMILIES", "PIPELINE_CLASSES", "family_name", "family_of_class", "supported", *_SEAM]


def family_of_class(class_name: str | None) -> str | None:
    """The key of the family that serves a pipeline class name (None: no family does)."""
    return next((key for key, (_, classes, _) in FAMILIES.items() if class_name in classes), None)


def family_name(key: str) -> str:
    """What a family key means, for messages ('Stable Diffusion XL'; an unknown key as it is)."""
    return FAMILIES[key][0] if key in FAMILIES else key


def supported() -> str:
    """The supported pipelines, for messages: 'StableDiffusionPipeline (Stable Diffusion 1.x / 2.x)'."""
    return "; ".join(f"{', '.join(classes)} ({what})" for what, classes, _ in FAMILIES.values())

__getattr__ = lazy_attributes(__name__, dict.fromkeys(_SEAM, "seam"))
