"""Load a Stable Diffusion pipeline by name or path; ``world`` is the one shipped with obliviate."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from .errors import ObliviateError

# Sampler settings per model family: the world was trained for few steps, SD for the usual 50 / 7.5.
SD_DEFAULTS = {"num_inference_steps": 50, "guidance_scale": 7.5}


@dataclass
class Model:
    """A loaded pipeline plus what obliviate needs to know about it."""

    pipe: StableDiffusionPipeline
    name: str
    steps: int
    guidance: float
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """Identity of the base weights (computed once, before any patch is applied)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.pipe)
        return self._fingerprint

    @property
    def is_world(self) -> bool:
        return self.name == "world"


def fingerprint(pipe: StableDiffusionPipeline) -> str:
    """A short hash of the UNet's and text encoder's configs, tensor shapes and a strided sample of values.

    Sampling keeps it fast on SD-sized models (seconds, not minutes) while any real edit or another
    checkpoint changes it.
    """
    h = hashlib.sha256()
    for module in (pipe.unet, pipe.text_encoder):
        config = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
        config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(f"{name}:{tuple(tensor.shape)}".encode())
            h.update(flat[::step].to(torch.float16).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _resolve(model: str) -> tuple[str, Path | str]:
    if model == "world":
        from .world import world_dir

        return "world", world_dir() / "pipeline"
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ObliviateError(f"{model} is not a diffusers pipeline folder (no model_index.json)")
        return str(path), path
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "/" not in model:
        raise ObliviateError(f"unknown model {model!r}: use 'world', a diffusers folder, or a hub id (online)")
    return model, model


def load_model(model: str = "world", device: str = "cpu") -> Model:
    """Load ``model`` ('world', a diffusers folder or a hub id) in float32 on ``device``."""
    name, source = _resolve(model)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    bars = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # loading a pipeline is instant; its bars are noise
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; older ones only know it
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = StableDiffusionPipeline.from_pretrained(
                source, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False,
            )
    except (OSError, ValueError) as exc:
        raise ObliviateError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from exc
    finally:
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.text_encoder, pipe.vae):
        module.requires_grad_(False).eval()
    if name == "world":
        from .world import world_info

        gen = world_info()["generation"]
    else:
        gen = SD_DEFAULTS
    model = Model(pipe=pipe, name=name, steps=gen["num_inference_steps"], guidance=gen["guidance_scale"])
    _ = model.fingerprint  # now, while the weights are the base model's (methods edit them in place later)
    return model
