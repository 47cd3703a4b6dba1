"""Stable Diffusion 1.x / 2.x: a ``UNet2DConditionModel`` reading one CLIP text encoder's last hidden states
through its cross-attention (attn2) layers, trained by denoising (epsilon or v prediction)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call

from ..attention import AttnCall, attn2_processors, kwargs
from ..errors import ObliviateError
from . import FAMILIES
from .seam import Conditioning, Segment, component_weights

LORA_TARGETS = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
LORA_KV_TARGETS = ("attn2.to_k", "attn2.to_v")  # the projections of the prompt: a LoRA there acts per prompt


def wrapped_weights(names: list[str], targets: tuple[str, ...]) -> list[str]:
    """The weights of the linear layers named by ``targets`` (the ones a LoRA wraps), among ``names``."""
    return [n for n in names if n.endswith(".weight") and any(f".{t}.weight" in f".{n}" for t in targets)]


def select(module, which: str, sets: Callable[[list[str]], dict[str, list[str]]]) -> list[str]:
    """The parameter names of ``module`` that the set ``which`` names, among a family's denoiser ``sets`` (a
    function of the module's names) or ``text-encoder`` (a text encoder's layers: its token and position tables
    stay, so a patch does not carry the vocabulary); one-line errors for an unknown or empty set, or a set
    named for the other kind of module."""
    if (which == "text-encoder") != hasattr(module, "get_input_embeddings"):
        raise ObliviateError(f"trainable set {which!r} does not name parameters of a {type(module).__name__}")
    names = [n for n, _ in module.named_parameters()]
    tables = ("embeddings.", "embed_tokens", "shared.")  # CLIP's token and position tables; T5's shared one
    chosen = [n for n in names if not any(t in n for t in tables)] if which == "text-encoder" \
        else sets(names).get(which)
    if chosen is None:
        raise ObliviateError(f"unknown trainable set {which!r}")
    if not chosen:
        raise ObliviateError(f"the model has no parameters in set {which!r}")
    return chosen


class StableDiffusion:
    key = "sd"
    name, pipeline_classes, _ = FAMILIES[key]
    denoiser = "unet"
    objective = "denoising"  # DDPM's noising; the scheduler config says epsilon, v or sample prediction
    text_encoders = ("text_encoder",)
    tokenizers = ("tokenizer",)
    other_encoders: tuple[str, ...] = ()
    other_tokenizers: tuple[str, ...] = ()

    def accepts(self, pipe) -> bool:
        """``pipe`` is one of the family's pipeline classes (or a subclass): an image-to-image or inpainting
        pipeline on the same weights is not (it samples from an image, not from noise)."""
        import diffusers

        return isinstance(pipe, tuple(getattr(diffusers, c) for c in self.pipeline_classes))

    def check(self, pipe) -> None:
        for part in ("text_encoder", "tokenizer", "vae", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ObliviateError(f"{type(pipe).__name__} has no {part}; obliviate needs a Stable Diffusion "
                                     "pipeline")

    def token_ids(self, pipe, prompts: list[str]) -> torch.Tensor:
        tok = pipe.tokenizer
        return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids

    def segments(self, pipe) -> list[Segment]:
        return [Segment(0, pipe.tokenizer.model_max_length, pipe.tokenizer)]

    def encode_ids(self, pipe, ids: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> Conditioning:
        encoder = pipe.text_encoder
        ids, mine = ids.to(encoder.device), component_weights(weights, "text_encoder")
        states = functional_call(encoder, mine, (ids,))[0] if mine else encoder(ids)[0]
        return Conditioning(states.to(device=pipe.unet.device, dtype=pipe.unet.dtype))

    def predict(self, forward: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention: AttnCall | None = None) -> torch.Tensor:
        extra = {"cross_attention_kwargs": kwargs(attention)} if attention is not None else {}
        return forward(x_t, t, encoder_hidden_states=cond.states, **self.added(cond), **extra).sample

    def added(self, cond: Conditioning) -> dict:
        """What the UNet reads besides the text states (SD: nothing)."""
        return {}

    def latent_shape(self, pipe, batch: int) -> tuple[int, int, int, int]:
        cfg = pipe.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return batch, cfg.in_channels, size, size

    def prompt_call(self, pipe, prompts: list[str]) -> dict:
        """How the family's pipelines are given ``prompts`` so that they sample what :meth:`encode_ids` means by
        them (SD: the prompts themselves; the pipeline encodes them as the family does)."""
        return {"prompt": prompts}

    def call_options(self, pipe) -> dict:
        """What the family's pipelines are called with besides prompt, size and sampler (SD: nothing)."""
        return {}

    def sampler_options(self, pipe, steps: int) -> dict:
        return {}

    def text_width(self, model) -> int:
        return int(model.config.cross_attention_dim)

    def text_layers(self, model) -> list[str]:
        names = [n for n, _ in model.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n]
        if not names:
            raise ObliviateError("the UNet has no attn2 to_k / to_v projections")
        return names

    def pooled_layers(self, model) -> dict[str, slice]:
        return {}  # SD's text enters through cross-attention only

    def trainable_names(self, module, which: str) -> list[str]:
        """``attn2`` (cross-attention), its ``-kv`` / ``-qk`` projections, ``non-attn2`` (everything else,
        ESD-u), ``unet`` (all), ``lora`` (the attn2 projection weights a LoRA wraps), ``lora-kv`` (its to_k/to_v
        weights only) of a UNet; ``text-encoder``: a text encoder's transformer layers."""
        return select(module, which, lambda names: {
            "attn2": [n for n in names if ".attn2." in n],
            "attn2-kv": [n for n in names if ".attn2.to_k." in n or ".attn2.to_v." in n],
            "attn2-qk": [n for n in names if ".attn2.to_q." in n or ".attn2.to_k." in n],
            "non-attn2": [n for n in names if ".attn2." not in n],
            "unet": names,
            "lora": wrapped_weights(names, LORA_TARGETS),
            "lora-kv": wrapped_weights(names, LORA_KV_TARGETS),
        })

    def attention(self, model, memory: Any = None, placement: str = "all") -> Any:
        return attn2_processors(model, memory, placement)

    def img2img(self, pipe) -> Any:
        from diffusers import StableDiffusionImg2ImgPipeline

        parts = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
        return StableDiffusionImg2ImgPipeline(**parts, requires_safety_checker=False)


FAMILY = StableDiffusion()
