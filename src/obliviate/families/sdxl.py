"""Stable Diffusion XL: the SD UNet's cross-attention (attn2) reads the two text encoders' penultimate hidden
states side by side; the second encoder's projected end-of-text embedding (the pooled embedding) and six time
ids (original size, crop corner, target size) enter through the UNet's added time embedding.

What the pipeline does in ``encode_prompt`` is done here once, from token ids: both encoders read the same ids
(the two tokenizers share CLIP's vocabulary and differ only in their padding token), and an empty prompt is a
zero conditioning where the pipeline says ``force_zeros_for_empty_prompt``, as SDXL samples its
unconditional branch. Everything the UNet does with text is SD's, so the edits' layers are SD's too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call

from ..errors import ObliviateError
from . import FAMILIES
from .sd import StableDiffusion
from .seam import Conditioning, component_weights


def second_ids(pipe, ids: torch.Tensor) -> torch.Tensor:
    """The second CLIP tokenizer's ids for the same prompts: the same tokens, its own padding after the first
    end-of-text token (SDXL's and SD3's second tokenizer pads with "!" where the first repeats end-of-text)."""
    eos, pad = pipe.tokenizer.eos_token_id, pipe.tokenizer_2.pad_token_id
    first_eos = (ids == eos).int().cumsum(1)
    after = (first_eos > 1) | ((first_eos == 1) & (ids != eos))
    return torch.where(after, torch.full_like(ids, pad), ids)


class StableDiffusionXL(StableDiffusion):
    key = "sdxl"
    name, pipeline_classes, _ = FAMILIES[key]
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")

    def check(self, pipe) -> None:
        for part in (*self.text_encoders, *self.tokenizers, "vae", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ObliviateError(f"{type(pipe).__name__} has no {part}; obliviate needs both SDXL text "
                                     "encoders and their tokenizers (a refiner-only pipeline is not supported)")
        one, two = pipe.tokenizer, pipe.tokenizer_2
        if len(one) != len(two) or one.model_max_length != two.model_max_length:
            raise ObliviateError("the two SDXL tokenizers differ in vocabulary or length; obliviate needs the "
                                 "shared CLIP vocabulary SDXL ships")
        if pipe.unet.config.addition_embed_type != "text_time":
            raise ObliviateError("the SDXL UNet has no added text/time embedding")

    def encode_ids(self, pipe, ids: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> Conditioning:
        unet = pipe.unet
        states, pooled = [], None
        for component, these in zip(self.text_encoders, (ids, second_ids(pipe, ids)), strict=True):
            encoder = getattr(pipe, component)
            mine = component_weights(weights, component)
            these = these.to(encoder.device)
            out = functional_call(encoder, mine, (these,), {"output_hidden_states": True}) if mine \
                else encoder(these, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            if component == "text_encoder_2":
                pooled = out[0]
        cond = Conditioning(torch.cat(states, -1).to(unet.device, unet.dtype), pooled.to(unet.device, unet.dtype),
                            {"time_ids": self.time_ids(pipe, len(ids)).to(unet.device, unet.dtype)})
        if getattr(pipe.config, "force_zeros_for_empty_prompt", False):
            empty = self._empty(pipe, ids).to(unet.device)
            if empty.any():
                zero = Conditioning(torch.zeros_like(cond.states), torch.zeros_like(cond.pooled), cond.extra)
                cond = Conditioning.where(empty, zero, cond)
        return cond

    @staticmethod
    def _empty(pipe, ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``ids`` that spell the empty prompt (start token, then end-of-text)."""
        return ids[:, 1] == pipe.tokenizer.eos_token_id

    @staticmethod
    def time_ids(pipe, n: int) -> torch.Tensor:
        """SDXL's added time ids for the pipeline's default image size, no crop: (h, w, 0, 0, h, w) per row."""
        size = pipe.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        h, w = h * pipe.vae_scale_factor, w * pipe.vae_scale_factor
        return torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32).expand(n, 6)

    def pooled_layers(self, model) -> dict[str, slice]:
        """The added embedding's first linear reads [pooled; time-id embeddings]: its first columns, the pooled."""
        cfg = model.config
        return {"add_embedding.linear_1.weight":
                slice(0, cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim)}

    def added(self, cond: Conditioning) -> dict:
        """The pooled embedding and the time ids, through the UNet's added time embedding."""
        return {"added_cond_kwargs": {"text_embeds": cond.pooled, "time_ids": cond.extra["time_ids"]}}

    def prompt_call(self, pipe, prompts: list[str]) -> dict:
        """The family's conditioning as embeddings: SDXL's pipeline encodes a *positive* empty prompt through
        both encoders, while the empty prompt means its zero conditioning (the unconditional branch it was
        trained and samples with), so "" reaches the pipeline as zeros; the negative branch is the pipeline's
        own (zeros)."""
        both = self.encode_ids(pipe, self.token_ids(pipe, [*prompts, ""]))  # one encoder pass for both branches
        cond, empty = both[:-1], both[-1:].expand(len(prompts))
        return {"prompt_embeds": cond.states, "pooled_prompt_embeds": cond.pooled,
                "negative_prompt_embeds": empty.states, "negative_pooled_prompt_embeds": empty.pooled}

    def img2img(self, pipe) -> Any:
        from diffusers import StableDiffusionXLImg2ImgPipeline

        parts = {k: v for k, v in pipe.components.items() if k in ("vae", "unet", "scheduler", *self.text_encoders,
                                                                    *self.tokenizers)}
        return StableDiffusionXLImg2ImgPipeline(**parts, requires_aesthetics_score=False,
                                                force_zeros_for_empty_prompt=pipe.config.force_zeros_for_empty_prompt)


FAMILY = StableDiffusionXL()
