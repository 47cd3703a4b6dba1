"""Stable Diffusion 3: an MMDiT transformer (``SD3Transformer2DModel``) trained by flow matching. Text and image
tokens attend jointly: each block projects the text stream with its own ``add_q_proj`` / ``add_k_proj`` /
``add_v_proj`` (and ``to_add_out`` back), image queries read the text's keys and values there. The text states
are two CLIP encoders' penultimate states side by side, zero-padded to T5's width, followed by T5's states along
the sequence; they enter through ``context_embedder`` (one linear) and the pooled embedding (both CLIPs' projected
end-of-text embeddings) through ``time_text_embed.text_embedder``.

The family's token ids are the first CLIP tokenizer's; T5 has a vocabulary of its own, so :meth:`token_ids`
appends T5's ids of the same prompts, and ids built from CLIP tokens alone (attacks that search over tokens)
reach T5 as the text those tokens spell. A pipeline without T5 (``text_encoder_3=None``, as SD3 can run) gets
T5's zeros, as the pipeline does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..attention import joint_processors, kwargs
from ..errors import ObliviateError
from . import FAMILIES
from .sd import StableDiffusion, select, wrapped_weights
from .sdxl import second_ids
from .seam import Conditioning, Segment, component_weights

T5_LENGTH = 256  # the pipeline's default max_sequence_length (a T5 tokenizer that declares less: its own)
TEXT_STREAM = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")  # the joint attention's text projections
TEXT_KV = ("add_k_proj", "add_v_proj")  # what image queries read: a prompt's keys and values


class StableDiffusion3:
    key = "sd3"
    name, pipeline_classes, _ = FAMILIES[key]
    denoiser = "transformer"
    objective = "flow"
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")
    other_encoders = ("text_encoder_3",)
    other_tokenizers = ("tokenizer_3",)

    accepts = StableDiffusion.accepts  # one of the family's pipeline classes (not an img2img pipeline)

    def check(self, pipe) -> None:
        for part in (*self.text_encoders, *self.tokenizers, "vae", "scheduler"):
            if getattr(pipe, part, None) is None:
                raise ObliviateError(f"{type(pipe).__name__} has no {part}; obliviate needs both SD3 CLIP text "
                                     "encoders and their tokenizers")
        if len(pipe.tokenizer) != len(pipe.tokenizer_2):
            raise ObliviateError("the two SD3 CLIP tokenizers differ in vocabulary; obliviate needs the shared "
                                 "CLIP vocabulary SD3 ships")
        if (pipe.text_encoder_3 is None) != (getattr(pipe, "tokenizer_3", None) is None):
            raise ObliviateError("the SD3 pipeline has a T5 encoder without its tokenizer, or the reverse")

    # ------------------------------------------------------------------------------------------ conditioning

    def _t5(self, pipe) -> bool:
        return getattr(pipe, "text_encoder_3", None) is not None

    def token_ids(self, pipe, prompts: list[str]) -> torch.Tensor:
        tok = pipe.tokenizer
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return torch.cat([ids, self._t5_ids(pipe, prompts)], 1) if self._t5(pipe) else ids

    def segments(self, pipe) -> list[Segment]:
        n = pipe.tokenizer.model_max_length
        return [Segment(0, n, pipe.tokenizer), Segment(n, self.t5_length(pipe), self._t5_tokenizer(pipe))]

    def _t5_tokenizer(self, pipe):
        return pipe.tokenizer_3 if self._t5(pipe) else None

    def t5_length(self, pipe) -> int:
        """T5 tokens the conditioning holds: the pipeline's default, or fewer where the T5 tokenizer declares
        fewer (the world's); generation passes the same ``max_sequence_length`` (:meth:`call_options`)."""
        tok = self._t5_tokenizer(pipe)
        return min(T5_LENGTH, tok.model_max_length) if tok is not None else T5_LENGTH

    def prompt_call(self, pipe, prompts: list[str]) -> dict:
        """The prompts themselves: the pipeline encodes them (the empty one too) as :meth:`encode_ids` does."""
        return {"prompt": prompts}

    def call_options(self, pipe) -> dict:
        return {"max_sequence_length": self.t5_length(pipe)}

    def _t5_ids(self, pipe, prompts: list[str]) -> torch.Tensor:
        return self._t5_tokenizer(pipe)(prompts, padding="max_length", max_length=self.t5_length(pipe),
                                        truncation=True, add_special_tokens=True, return_tensors="pt").input_ids

    def _split(self, pipe, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CLIP's ids and T5's (None: no T5): T5's are appended by :meth:`token_ids`, or spelled from CLIP's
        tokens."""
        n = pipe.tokenizer.model_max_length
        if not self._t5(pipe):
            return ids[:, :n], None
        if ids.shape[1] > n:
            return ids[:, :n], ids[:, n:]
        text = pipe.tokenizer.batch_decode(ids.cpu(), skip_special_tokens=True)
        return ids, self._t5_ids(pipe, text)

    def encode_ids(self, pipe, ids: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> Conditioning:
        model = pipe.transformer
        clip_ids, t5_ids = self._split(pipe, ids)
        states, pooled = [], []
        for component, these in zip(self.text_encoders, (clip_ids, second_ids(pipe, clip_ids)), strict=True):
            encoder = getattr(pipe, component)
            mine, these = component_weights(weights, component), these.to(encoder.device)
            out = functional_call(encoder, mine, (these,), {"output_hidden_states": True}) if mine \
                else encoder(these, output_hidden_states=True)
            states.append(out.hidden_states[-2].to(model.device, torch.float32))
            pooled.append(out[0].to(model.device, torch.float32))
        if t5_ids is None:
            t5 = torch.zeros(len(ids), self.t5_length(pipe), model.config.joint_attention_dim, device=model.device)
        else:
            encoder = pipe.text_encoder_3
            mine = component_weights(weights, "text_encoder_3")
            t5_ids = t5_ids.to(encoder.device)
            t5 = (functional_call(encoder, mine, (t5_ids,)) if mine else encoder(t5_ids))[0]
            t5 = t5.to(model.device, torch.float32)
        clip = torch.cat(states, -1)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # as the pipeline: zeros to T5's width (or cut)
        return Conditioning(torch.cat([clip, t5], 1).to(model.dtype), torch.cat(pooled, -1).to(model.dtype))

    def predict(self, forward: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention: Any = None) -> torch.Tensor:
        extra = {"joint_attention_kwargs": kwargs(attention)} if attention is not None else {}
        return forward(hidden_states=x_t, timestep=t.expand(len(x_t)), encoder_hidden_states=cond.states,
                       pooled_projections=cond.pooled, **extra).sample

    # ---------------------------------------------------------------------------------------------- layers

    def latent_shape(self, pipe, batch: int) -> tuple[int, int, int, int]:
        """At the pipeline's default size (its ``default_sample_size``: the transformer's ``sample_size``)."""
        size = pipe.default_sample_size
        return batch, pipe.transformer.config.in_channels, size, size

    def sampler_options(self, pipe, steps: int) -> dict:
        return {}

    def text_width(self, model) -> int:
        """The text stream's width in the joint blocks (after ``context_embedder``): a prompt memory's rows."""
        return int(model.config.caption_projection_dim)

    def text_layers(self, model) -> list[str]:
        """The one projection every text state goes through before the joint blocks (UCE's Flux edit's place)."""
        return ["context_embedder.weight"]

    def pooled_layers(self, model) -> dict[str, slice]:
        weight = model.time_text_embed.text_embedder.linear_1.weight
        return {"time_text_embed.text_embedder.linear_1.weight": slice(0, weight.shape[1])}

    def trainable_names(self, module, which: str) -> list[str]:
        """SD's set names on the joint blocks: ``attn2`` is the text stream's attention projections (add_q,
        add_k, add_v, to_add_out: where text enters attention, as cross-attention is on a UNet), ``attn2-kv``
        its keys and values, ``attn2-qk`` its queries and keys (EraseAnything's choice), ``non-attn2`` the rest
        of the transformer, ``unet`` all of it; ``lora`` / ``lora-kv`` the weights a LoRA wraps there;
        ``text-encoder`` a text encoder's layers."""
        def among(n: str, projections: tuple[str, ...]) -> bool:
            return any(f".attn.{p}." in n for p in projections)

        return select(module, which, lambda names: {
            "attn2": [n for n in names if among(n, TEXT_STREAM)],
            "attn2-kv": [n for n in names if among(n, TEXT_KV)],
            "attn2-qk": [n for n in names if among(n, ("add_q_proj", "add_k_proj"))],
            "non-attn2": [n for n in names if not among(n, TEXT_STREAM)],
            "unet": names,
            "lora": wrapped_weights(names, tuple(f"attn.{p}" for p in TEXT_STREAM)),
            "lora-kv": wrapped_weights(names, tuple(f"attn.{p}" for p in TEXT_KV)),
        })

    def attention(self, model, memory: Any = None, placement: str = "all") -> Any:
        return joint_processors(model, memory, placement)

    def img2img(self, pipe) -> Any:
        from diffusers import StableDiffusion3Img2ImgPipeline

        names = ("transformer", "vae", "scheduler", *self.text_encoders, *self.tokenizers, "text_encoder_3",
                 "tokenizer_3")
        return StableDiffusion3Img2ImgPipeline(**{k: v for k, v in pipe.components.items() if k in names})


FAMILY = StableDiffusion3()
