"""The Flux world: a genuine ``FluxPipeline`` on the world's domain, trained by the world's recipe with flow
matching, then guidance-distilled as Flux-dev was.

What makes it Flux and not SD3 with other widths: the text tokens are T5's alone (CLIP gives only the pooled
embedding, from a plain ``CLIPTextModel``'s pooler output); double-stream blocks (text with projections of its
own, text tokens first) are followed by single-stream blocks in which text and image tokens share one set of
projections; the latents enter packed in 2 x 2 patches with rotary position ids; the timestep is read as sigma;
and the transformer takes the guidance scale as an *input* (``guidance_embeds``): after the flow-matching stage,
a distillation stage teaches it to give, for a scale ``g``, what classifier-free guidance at ``g`` gave the
model before (Flux-dev samples with one transformer call per step, no unconditional branch). The scheduler is
Flux's flow-matching Euler with the resolution-dependent shift. The CLIP tokenizer, VAE and detector are the SD
world's; T5's tokenizer is built from the world's words.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from ..progress import bar as progress_bar
from . import domain


@dataclass
class FluxArch:
    """Widths of the Flux world's networks and its distillation stage."""

    clip_width: int = 48  # CLIP ViT-L's role: its pooled output is the pooled embedding
    clip_layers: int = 3
    t5_width: int = 96
    t5_layers: int = 2
    t5_length: int = 32  # T5 tokens the world's pipeline reads (its tokenizer's model_max_length)
    double_layers: int = 2  # Flux-dev: 19
    single_layers: int = 4  # Flux-dev: 38
    heads: int = 4
    head_width: int = 16
    rope_axes: tuple[int, int, int] = (4, 6, 6)  # Flux-dev: (16, 56, 56) for heads of 128
    distill_share: float = 0.25  # distillation steps per flow-matching step of the recipe (4000: 1000)
    guidance_range: tuple[float, float] = (1.0, 7.0)  # scales the distilled transformer learns
    latent_channels: int = 4  # the SD world's VAE (packed: 16 channels per token)
    max_length: int = 24  # the CLIP tokenizer's


def make_text_encoders(arch: FluxArch, vocab_size: int, bos_id: int, eos_id: int, t5_vocab: int) \
        -> tuple[CLIPTextModel, T5EncoderModel]:
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=arch.clip_width, intermediate_size=4 * arch.clip_width,
        num_hidden_layers=arch.clip_layers, num_attention_heads=4, max_position_embeddings=arch.max_length,
        hidden_act="gelu", bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id))
    t5 = T5EncoderModel(T5Config(
        vocab_size=t5_vocab, d_model=arch.t5_width, d_kv=arch.t5_width // 4, d_ff=2 * arch.t5_width,
        num_layers=arch.t5_layers, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    return clip, t5


def make_transformer(arch: FluxArch) -> FluxTransformer2DModel:
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4 * arch.latent_channels, num_layers=arch.double_layers,
        num_single_layers=arch.single_layers, attention_head_dim=arch.head_width, num_attention_heads=arch.heads,
        joint_attention_dim=arch.t5_width, pooled_projection_dim=arch.clip_width, guidance_embeds=True,
        axes_dims_rope=list(arch.rope_axes))


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Flux-dev's scheduler_config.json: flow-matching Euler, its shift set by the image's token count."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096)


class FluxTrainee:
    """The transformer and the two text encoders the recipe trains jointly by flow matching, conditioned as the
    Flux pipeline conditions (a dropped caption is the empty prompt, encoded as any other), with the guidance
    input at 1 (no guidance: what the distillation stage starts from); :meth:`distill` then teaches the
    guidance input."""

    objective = "flow"

    def __init__(self, arch: FluxArch, tokenizer, t5_tokenizer) -> None:
        self.arch, self.tokenizer, self.t5_tokenizer = arch, tokenizer, t5_tokenizer
        self.transformer = make_transformer(arch)
        self.text_encoder, self.text_encoder_2 = make_text_encoders(
            arch, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, len(t5_tokenizer))

    def modules(self) -> list[torch.nn.Module]:
        return [self.transformer, self.text_encoder, self.text_encoder_2]

    def _conditioning(self, ids: torch.Tensor, guidance: torch.Tensor):
        from ..families.seam import Conditioning

        pooled = self.text_encoder(ids).pooler_output
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)  # the captions (one token per word)
        t5_ids = self.t5_tokenizer(texts, padding="max_length", max_length=self.arch.t5_length, truncation=True,
                                   return_tensors="pt").input_ids
        return Conditioning(self.text_encoder_2(t5_ids)[0], pooled, {"guidance": guidance})

    def _predict(self, transformer, zt: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        from ..families.flux import FAMILY  # the family's packing, position ids and sigma time: one place

        return FAMILY.predict(transformer, zt, t, cond)

    def __call__(self, zt: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self._predict(self.transformer, zt, t, self._conditioning(ids, torch.ones(len(ids))))

    def distill(self, latents: torch.Tensor, scenes: list[domain.Scene], cfg, gen: torch.Generator,
                rng: np.random.Generator, bar: bool) -> None:
        """Guidance distillation: the transformer at scale ``g`` learns the velocity the frozen flow-matching
        model gives under classifier-free guidance at ``g``, ``v(x, empty) + g (v(x, c) - v(x, empty))``; the text
        encoders stay as trained (the teacher's conditioning is the student's)."""
        from .recipe import flow_noised
        from .recipe import make_scheduler as recipe_scheduler

        scale = recipe_scheduler().config.num_train_timesteps  # the recipe's time scale
        teacher = copy.deepcopy(self.transformer).requires_grad_(False)
        for encoder in (self.text_encoder, self.text_encoder_2):
            encoder.requires_grad_(False)
        low, high = self.arch.guidance_range
        params = list(self.transformer.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.unet_lr / 3, weight_decay=0.01)
        steps = max(1, round(cfg.unet_steps * self.arch.distill_share))
        for _ in progress_bar(range(steps), desc="guidance distillation", unit="step",
                              enabled=bar, leave=True):
            idx = torch.randint(len(latents), (cfg.unet_batch,), generator=gen)
            captions = [domain.caption(scenes[i], rng) for i in idx.tolist()]
            ids = self.tokenizer([*captions, *[""] * len(idx)], padding="max_length",
                                 max_length=self.tokenizer.model_max_length, truncation=True,
                                 return_tensors="pt").input_ids
            z0 = latents[idx]
            zt, t = flow_noised(z0, torch.randn(z0.shape, generator=gen), gen, scale)
            g = low + (high - low) * torch.rand(len(idx), generator=gen)
            with torch.no_grad():
                cond = self._conditioning(ids, torch.ones(2 * len(idx)))
                both = self._predict(teacher, torch.cat([zt, zt]), torch.cat([t, t]), cond)
                conditional, empty = both.chunk(2)
                target = empty + g.view(-1, 1, 1, 1) * (conditional - empty)
            student = type(cond)(cond.states[:len(idx)], cond.pooled[:len(idx)], {"guidance": g})
            loss = (self._predict(self.transformer, zt, t, student) - target).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        self.transformer.eval()

    def pipeline(self, vae) -> FluxPipeline:
        vae.register_to_config(shift_factor=0.0)  # Flux's pipeline removes the VAE's shift when it decodes
        return FluxPipeline(transformer=self.transformer, vae=vae, scheduler=make_scheduler(),
                            text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                            tokenizer=self.tokenizer, tokenizer_2=self.t5_tokenizer)


def build(out, cfg=None, arch: FluxArch | None = None, log=print, bar: bool = True) -> dict:
    """Train the Flux world into the new folder ``out`` (whole or not at all) by the SD world's recipe (``cfg``:
    its BuildConfig, default the shipped one) on the same training scenes with flow matching, then distil its
    guidance; the CLIP tokenizer, VAE and detector are the shipped SD world's, T5's tokenizer is built from the
    world's words. Returns its world.json."""
    from .recipe import build_family_world
    from .tokenizer import build_t5_tokenizer

    arch = arch or FluxArch()

    def trainee(tokenizer) -> FluxTrainee:
        return FluxTrainee(arch, tokenizer, build_t5_tokenizer(domain.vocabulary(), arch.t5_length))

    return build_family_world(out, "flux", trainee, arch, cfg, log, bar, shares=("tokenizer",))
