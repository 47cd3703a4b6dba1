"""The SDXL world: a genuine ``StableDiffusionXLPipeline`` on the world's domain, trained by the world's recipe.

What makes it SDXL and not SD with other widths: two CLIP text encoders of different widths whose penultimate
hidden states the UNet reads side by side, the second one's projected end-of-text embedding (the pooled
embedding) entering with six time ids through the UNet's added time embedding (``addition_embed_type=
"text_time"``), no attention in the first (highest-resolution) block and transformer depth above 1 deeper down,
linear projections in the transformers, the zero unconditional branch (``force_zeros_for_empty_prompt``: a
caption dropped in training is a zero conditioning, as SDXL was trained), and the sampler SDXL ships (Euler,
leading spacing). The tokenizer, VAE and detector are the SD world's, so both worlds draw the same domain and
are judged by one detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .domain import IMAGE_SIZE


@dataclass
class SDXLArch:
    """Widths of the SDXL world's networks."""

    text_widths: tuple[int, int] = (32, 64)  # text encoder 1 (CLIP ViT-L's role), 2 (OpenCLIP bigG's)
    text_layers: int = 3
    pooled_width: int = 32  # the second encoder's projection
    unet_channels: tuple[int, ...] = (32, 64, 96)
    transformer_depth: tuple[int, ...] = (0, 1, 2)  # per down block (0: no attention, as SDXL's first block)
    time_embed_width: int = 16  # per time id (SDXL: 256)
    max_length: int = 24
    latent_channels: int = 4
    vae_levels: int = 3  # the SD world's VAE: 32 px images, 8 x 8 latents


def make_text_encoders(arch: SDXLArch, vocab_size: int, bos_id: int, eos_id: int) \
        -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    def config(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
                              num_hidden_layers=arch.text_layers, num_attention_heads=4,
                              max_position_embeddings=arch.max_length, projection_dim=arch.pooled_width,
                              hidden_act="gelu", bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id)

    one, two = arch.text_widths
    return CLIPTextModel(config(one)), CLIPTextModelWithProjection(config(two))


def make_unet(arch: SDXLArch) -> UNet2DConditionModel:
    down = tuple("CrossAttnDownBlock2D" if d else "DownBlock2D" for d in arch.transformer_depth)
    up = tuple(b.replace("Down", "Up") for b in reversed(down))
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2 ** (arch.vae_levels - 1), in_channels=arch.latent_channels,
        out_channels=arch.latent_channels, down_block_types=down, up_block_types=up,
        block_out_channels=arch.unet_channels, layers_per_block=1,
        transformer_layers_per_block=tuple(max(1, d) for d in arch.transformer_depth),
        attention_head_dim=tuple(max(1, c // 16) for c in arch.unet_channels), use_linear_projection=True,
        cross_attention_dim=sum(arch.text_widths), addition_embed_type="text_time",
        addition_time_embed_dim=arch.time_embed_width,
        projection_class_embeddings_input_dim=arch.pooled_width + 6 * arch.time_embed_width, norm_num_groups=16,
    )


def make_scheduler() -> EulerDiscreteScheduler:
    """SDXL's scheduler_config.json: SD's noise schedule, sampled by Euler with leading spacing."""
    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
                                  prediction_type="epsilon")


class SDXLTrainee:
    """The UNet and both text encoders the recipe trains jointly, conditioned as the SDXL pipeline conditions:
    penultimate states side by side, the pooled embedding and the time ids, zeros for a dropped caption."""

    def __init__(self, arch: SDXLArch, tokenizer) -> None:
        self.unet = make_unet(arch)
        self.text_encoder, self.text_encoder_2 = make_text_encoders(arch, len(tokenizer), tokenizer.bos_token_id,
                                                                    tokenizer.eos_token_id)
        self.tokenizer = tokenizer
        self.time_ids = torch.tensor([[IMAGE_SIZE, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE]], dtype=torch.float32)

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.text_encoder, self.text_encoder_2]

    def __call__(self, zt: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        one = self.text_encoder(ids, output_hidden_states=True)
        two = self.text_encoder_2(ids, output_hidden_states=True)
        states = torch.cat([one.hidden_states[-2], two.hidden_states[-2]], -1)
        pooled = two.text_embeds
        keep = (ids[:, 1] != self.tokenizer.eos_token_id).float()  # an empty caption: SDXL's zero conditioning
        states, pooled = states * keep[:, None, None], pooled * keep[:, None]
        added = {"text_embeds": pooled, "time_ids": self.time_ids.expand(len(ids), 6)}
        return self.unet(zt, t, states, added_cond_kwargs=added).sample

    def pipeline(self, vae) -> StableDiffusionXLPipeline:
        return StableDiffusionXLPipeline(vae=vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                                         tokenizer=self.tokenizer, tokenizer_2=self.tokenizer, unet=self.unet,
                                         scheduler=make_scheduler(), force_zeros_for_empty_prompt=True)


def build(out, cfg=None, arch: SDXLArch | None = None, log=print, bar: bool = True) -> dict:
    """Train the SDXL world into the new folder ``out`` (whole or not at all) by the SD world's recipe (``cfg``:
    its BuildConfig, default the shipped one) on the same training scenes: the UNet and both text encoders; the
    tokenizer (both tokenizers), the VAE and the detector are the shipped SD world's. Returns its world.json."""
    from .recipe import build_family_world

    arch = arch or SDXLArch()
    return build_family_world(out, "sdxl", lambda tokenizer: SDXLTrainee(arch, tokenizer), arch, cfg, log, bar)
