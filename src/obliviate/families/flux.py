"""Flux: an MMDiT (``FluxTransformer2DModel``) trained by flow matching, reading T5's states as its text tokens
and CLIP's pooled embedding; double-stream blocks give text its own projections (``add_q/k/v_proj``,
``to_add_out``, text tokens first in the joint softmax), single-stream blocks then run text and image tokens
through one shared set. What the pipeline does around the transformer is done here, in one place: the latents
are packed into 2 x 2 patches (``_pack_latents``) with their position ids, the text's position ids are zeros,
the timestep is read as sigma (t / 1000), and a guidance-distilled model (``guidance_embeds``, Flux-dev) reads
the pipeline's default guidance (3.5) as an input. Its sampler shifts its sigmas by the image's token count.

The family's token ids are CLIP's (for the pooled embedding) followed by T5's; the text positions the
transformer attends to are T5's alone (:meth:`segments`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from ..attention import joint_processors, kwargs
from ..errors import ObliviateError
from . import FAMILIES
from .sd3 import StableDiffusion3
from .seam import Conditioning, Segment, component_weights

T5_LENGTH = 512  # the Flux pipeline's default max_sequence_length (a T5 tokenizer that declares less: its own)
GUIDANCE = 3.5  # the Flux pipeline's default guidance_scale: an input of a guidance-distilled transformer


class Flux(StableDiffusion3):
    """Flux shares SD3's joint-attention layer names (the ``attn2`` sets name the double-stream blocks' text
    projections; the single-stream blocks share one set between text and image and are ``non-attn2``),
    ``context_embedder`` and the pooled text projection; its conditioning, packing, time and sampler are its
    own."""

    key = "flux"
    name, pipeline_classes, _ = FAMILIES[key]
    text_encoders = ("text_encoder",)
    tokenizers = ("tokenizer",)
    other_encoders = ("text_encoder_2",)
    other_tokenizers = ("tokenizer_2",)

    def check(self, pipe) -> None:
        for part in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ObliviateError(f"{type(pipe).__name__} has no {part}; obliviate needs Flux's CLIP and T5 "
                                     "encoders and their tokenizers")

    # ------------------------------------------------------------------------------------------ conditioning

    def _t5(self, pipe) -> bool:
        return True  # Flux's text tokens are T5's: it cannot run without it

    def _t5_tokenizer(self, pipe):
        return pipe.tokenizer_2

    def t5_length(self, pipe) -> int:
        return min(T5_LENGTH, pipe.tokenizer_2.model_max_length)

    def segments(self, pipe) -> list[Segment]:
        return [Segment(0, self.t5_length(pipe), pipe.tokenizer_2)]

    def encode_ids(self, pipe, ids: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> Conditioning:
        model = pipe.transformer
        clip_ids, t5_ids = self._split(pipe, ids)
        outputs = []
        for component, these in (("text_encoder", clip_ids), ("text_encoder_2", t5_ids)):
            encoder = getattr(pipe, component)
            mine, these = component_weights(weights, component), these.to(encoder.device)
            outputs.append(functional_call(encoder, mine, (these,)) if mine else encoder(these))
        pooled, states = outputs[0].pooler_output, outputs[1][0]
        extra = {"guidance": torch.full((len(ids),), GUIDANCE, device=model.device)} \
            if model.config.guidance_embeds else {}
        return Conditioning(states.to(model.device, model.dtype), pooled.to(model.device, model.dtype), extra)

    def predict(self, forward: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention: Any = None) -> torch.Tensor:
        b, c, h, w = x_t.shape
        packed = x_t.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)
        image_ids = torch.zeros(h // 2, w // 2, 3, device=x_t.device, dtype=x_t.dtype)
        image_ids[..., 1] += torch.arange(h // 2, device=x_t.device, dtype=x_t.dtype)[:, None]
        image_ids[..., 2] += torch.arange(w // 2, device=x_t.device, dtype=x_t.dtype)[None, :]
        text_ids = torch.zeros(cond.states.shape[1], 3, device=x_t.device, dtype=x_t.dtype)
        extra = {"joint_attention_kwargs": kwargs(attention)} if attention is not None else {}
        out = forward(hidden_states=packed, timestep=t.expand(b).to(x_t.dtype) / 1000,
                      guidance=cond.extra.get("guidance"), pooled_projections=cond.pooled,
                      encoder_hidden_states=cond.states, txt_ids=text_ids, img_ids=image_ids.reshape(-1, 3),
                      **extra).sample
        return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    # ---------------------------------------------------------------------------------------------- layers

    def latent_shape(self, pipe, batch: int) -> tuple[int, int, int, int]:
        """At the pipeline's default size (``default_sample_size`` x the VAE's factor), packable in 2 x 2."""
        height = pipe.default_sample_size * pipe.vae_scale_factor
        size = 2 * (height // (pipe.vae_scale_factor * 2))
        return batch, pipe.transformer.config.in_channels // 4, size, size

    def sampler_options(self, pipe, steps: int) -> dict:
        """The pipeline's sigmas (1 to 1/steps) and its shift for the image's token count."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        cfg = pipe.scheduler.config
        tokens = (self.latent_shape(pipe, 1)[-1] // 2) ** 2
        mu = calculate_shift(tokens, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        return {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": mu}

    def text_width(self, model) -> int:
        return int(model.config.num_attention_heads * model.config.attention_head_dim)

    def attention(self, model, memory: Any = None, placement: str = "all") -> Any:
        """Prompt memories and captures in the double-stream blocks, where text has projections of its own."""
        return joint_processors(model, memory, placement, text_first=True)

    def img2img(self, pipe) -> Any:
        from diffusers import FluxImg2ImgPipeline

        names = ("transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
        img2img = FluxImg2ImgPipeline(**{k: v for k, v in pipe.components.items() if k in names})
        img2img.default_sample_size = pipe.default_sample_size
        return img2img


FAMILY = Flux()
