"""The SD3 world: a genuine ``StableDiffusion3Pipeline`` on the world's domain, trained by the world's recipe with
SD3's flow-matching objective.

What makes it SD3: an MMDiT (``SD3Transformer2DModel``) whose blocks attend jointly over image and text tokens,
each stream with its own projections; text states made of two CLIP encoders' penultimate states side by side,
zero-padded to the width of a T5 encoder whose states follow along the sequence; the pooled embedding of both
CLIPs through the transformer's time-text embedding; the rectified-flow objective (x_t = (1 - sigma) x0 +
sigma noise, velocity target, SD3's logit-normal sigmas) and the sampler SD3 ships (flow-matching Euler,
shift 3). T5 has a tokenizer of its own, with its own vocabulary, built from the world's words. The CLIP
tokenizer, VAE and detector are the SD world's, so every world draws the same domain and is judged by one
detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from .domain import IMAGE_SIZE


@dataclass
class SD3Arch:
    """Widths of the SD3 world's networks."""

    clip_widths: tuple[int, int] = (32, 64)  # CLIP ViT-L's and OpenCLIP bigG's roles
    clip_layers: int = 3
    projection: int = 32  # each CLIP's pooled projection (the pooled embedding: both side by side)
    t5_width: int = 96  # at least the CLIPs' together, as T5-XXL's 4096 is above their 2048
    t5_layers: int = 2
    t5_length: int = 32  # T5 tokens the world's pipeline reads (its tokenizer's model_max_length)
    layers: int = 4  # joint blocks
    heads: int = 4
    head_width: int = 16
    latent_channels: int = 4
    vae_levels: int = 3  # the SD world's VAE: 32 px images, 8 x 8 latents
    max_length: int = 24  # the CLIP tokenizer's


def make_text_encoders(arch: SD3Arch, vocab_size: int, bos_id: int, eos_id: int, t5_vocab: int) \
        -> tuple[CLIPTextModelWithProjection, CLIPTextModelWithProjection, T5EncoderModel]:
    def clip(width: int) -> CLIPTextModelWithProjection:
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=arch.clip_layers,
            num_attention_heads=4, max_position_embeddings=arch.max_length, projection_dim=arch.projection,
            hidden_act="gelu", bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id))

    t5 = T5EncoderModel(T5Config(
        vocab_size=t5_vocab, d_model=arch.t5_width, d_kv=arch.t5_width // 4, d_ff=2 * arch.t5_width,
        num_layers=arch.t5_layers, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    one, two = arch.clip_widths
    return clip(one), clip(two), t5


def make_transformer(arch: SD3Arch) -> SD3Transformer2DModel:
    size = IMAGE_SIZE // 2 ** (arch.vae_levels - 1)
    return SD3Transformer2DModel(
        sample_size=size, patch_size=1, in_channels=arch.latent_channels, out_channels=arch.latent_channels,
        num_layers=arch.layers, attention_head_dim=arch.head_width, num_attention_heads=arch.heads,
        joint_attention_dim=arch.t5_width, caption_projection_dim=arch.heads * arch.head_width,
        pooled_projection_dim=2 * arch.projection, pos_embed_max_size=size)


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """SD3's scheduler_config.json: flow-matching Euler with shift 3."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


class SD3Trainee:
    """The transformer and the three text encoders the recipe trains jointly, conditioned as the SD3 pipeline
    conditions (a dropped caption is the empty prompt, encoded as any other, as SD3 samples its unconditional
    branch), by flow matching."""

    objective = "flow"

    def __init__(self, arch: SD3Arch, tokenizer, t5_tokenizer) -> None:
        self.arch, self.tokenizer, self.t5_tokenizer = arch, tokenizer, t5_tokenizer
        self.transformer = make_transformer(arch)
        self.text_encoder, self.text_encoder_2, self.text_encoder_3 = make_text_encoders(
            arch, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, len(t5_tokenizer))

    def modules(self) -> list[torch.nn.Module]:
        return [self.transformer, self.text_encoder, self.text_encoder_2, self.text_encoder_3]

    def __call__(self, zt: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        one = self.text_encoder(ids, output_hidden_states=True)
        two = self.text_encoder_2(ids, output_hidden_states=True)  # the world's tokenizer pads with end-of-text
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)  # the captions (one token per word)
        t5_ids = self.t5_tokenizer(texts, padding="max_length", max_length=self.arch.t5_length, truncation=True,
                                   return_tensors="pt").input_ids
        t5 = self.text_encoder_3(t5_ids)[0]
        clip = torch.cat([one.hidden_states[-2], two.hidden_states[-2]], -1)
        states = torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5], 1)
        pooled = torch.cat([one.text_embeds, two.text_embeds], -1)
        return self.transformer(hidden_states=zt, timestep=t, encoder_hidden_states=states,
                                pooled_projections=pooled).sample

    def pipeline(self, vae) -> StableDiffusion3Pipeline:
        vae.register_to_config(shift_factor=0.0)  # SD3's pipeline adds the VAE's shift when it decodes
        return StableDiffusion3Pipeline(
            transformer=self.transformer, vae=vae, scheduler=make_scheduler(), text_encoder=self.text_encoder,
            text_encoder_2=self.text_encoder_2, text_encoder_3=self.text_encoder_3, tokenizer=self.tokenizer,
            tokenizer_2=self.tokenizer, tokenizer_3=self.t5_tokenizer)


def build(out, cfg=None, arch: SD3Arch | None = None, log=print, bar: bool = True) -> dict:
    """Train the SD3 world into the new folder ``out`` (whole or not at all) by the SD world's recipe (``cfg``:
    its BuildConfig, default the shipped one) on the same training scenes with SD3's objective: the transformer
    and the three text encoders; the CLIP tokenizer (both), the VAE and the detector are the shipped SD world's,
    T5's tokenizer is built from the world's words. Returns its world.json."""
    from . import domain
    from .recipe import build_family_world
    from .tokenizer import build_t5_tokenizer

    arch = arch or SD3Arch()

    def trainee(tokenizer) -> SD3Trainee:
        return SD3Trainee(arch, tokenizer, build_t5_tokenizer(domain.vocabulary(), arch.t5_length))

    # the VAE is the world's, saved with SD3's config key for a latent shift (0: the world's latents are centred)
    return build_family_world(out, "sd3", trainee, arch, cfg, log, bar, shares=("tokenizer", "tokenizer_2"))
