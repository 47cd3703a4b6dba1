"""Tiny random pipelines with the real SD 1.5 and SD 2.1 block layouts and the schedulers those models ship.

SD 1.5 ships PNDM (``skip_prk_steps``, epsilon prediction); SD 2.1 (768) predicts velocity and its model card
samples with Euler. Widths are tiny and weights random: these check shapes, processors, schedulers, dtypes
and token handling, not image quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from obliviate.world.tokenizer import build_tokenizer

WORDS = ["a", "photo", "of", "the", "in", "style", "painting", "van", "gogh", "church", "tench", "dog", "cat"]


def make_tiny_sd(folder: Path, version: str = "1.5", seed: int = 0, full_size: bool = False) -> Path:
    """Write a random SD-``version``-shaped pipeline (64 px images, 8x8 latents) into ``folder``.

    ``full_size``: SD 1.5's real widths (a 860M-parameter UNet, 512 px images), for memory measurements.
    """
    torch.manual_seed(seed)
    width = 768 if full_size else 32
    tok_dir = folder / "_tok"
    build_tokenizer(WORDS, tok_dir, max_length=77)
    # SD 1.x pads with <|endoftext|>; SD 2.x's tokenizer pads with "!"
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, pad_token="<|endoftext|>" if version == "1.5" else "!")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width if full_size else 64,
        num_hidden_layers=12 if full_size else 2, num_attention_heads=12 if full_size else 4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        hidden_act="quick_gelu" if version == "1.5" else "gelu"))
    sd2 = version == "2.1"
    unet = UNet2DConditionModel(
        sample_size=64 if full_size else 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280) if full_size else (32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width, attention_head_dim=(2, 4, 8, 8) if sd2 else 8, use_linear_projection=sd2,
        norm_num_groups=32 if full_size else 8,
    )
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512) if full_size else
                        (8, 8, 16, 16), layers_per_block=2 if full_size else 1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        latent_channels=4, norm_num_groups=32 if full_size else 8, sample_size=512 if full_size else 64)
    if sd2:
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="leading", prediction_type="v_prediction")
    else:  # SD 1.5's scheduler_config.json
        scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out = folder / f"sd{version}{'-full' if full_size else ''}"
    pipe.save_pretrained(out)
    return out


def make_tiny_sdxl(folder: Path, seed: int = 0, full_size: bool = False) -> Path:
    """Write a random SDXL-shaped pipeline in the shape of diffusers' own SDXL test components (two CLIP text
    encoders of width 32, the second with a projection for the pooled embedding; a UNet with blocks (2, 4),
    transformer depth (1, 2) and the added text/time embedding) and the scheduler SDXL ships (Euler, leading
    spacing). 64 px images (8x8 latents) so that generation stays cheap.

    ``full_size``: SDXL's real widths (a 2.6B-parameter UNet, 1024 px images), for GPU measurements.
    """
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tok_dir = folder / "_tok"
    build_tokenizer(WORDS, tok_dir, max_length=77)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, pad_token="<|endoftext|>")
    tokenizer_2 = CLIPTokenizer.from_pretrained(tok_dir, pad_token="!")  # SDXL's second tokenizer pads with "!"
    widths = (768, 1280) if full_size else (32, 32)

    def text_config(width: int, layers: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width,
                              intermediate_size=4 * width if full_size else 37, num_hidden_layers=layers,
                              num_attention_heads=width // 64 if full_size else 4, max_position_embeddings=77,
                              hidden_act="gelu", projection_dim=width if full_size else 32,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer_2.pad_token_id)

    if full_size:
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280), layers_per_block=2, sample_size=128, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=256, transformer_layers_per_block=(1, 2, 10),
            projection_class_embeddings_input_dim=2816, cross_attention_dim=2048)
        vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            latent_channels=4, norm_num_groups=32, sample_size=1024)
    else:
        unet = UNet2DConditionModel(
            block_out_channels=(2, 4), layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=1)
        vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            latent_channels=4, norm_num_groups=8, sample_size=64)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(text_config(widths[0], 12 if full_size else 5)),
        text_encoder_2=CLIPTextModelWithProjection(text_config(widths[1], 32 if full_size else 5)),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
    out = folder / f"sdxl{'-full' if full_size else ''}"
    pipe.save_pretrained(out)
    return out


def make_full_size_sdxl(folder: Path, seed: int = 0) -> Path:
    return make_tiny_sdxl(folder, seed, full_size=True)
