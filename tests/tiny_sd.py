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


def t5_tokenizer(words: list[str] = WORDS):
    """A T5 tokenizer (sentencepiece-style unigram pieces, ``</s>`` appended, ``<pad>`` = 0) over ``words``, built
    in code: T5's vocabulary differs from CLIP's, which is what the SD3 family must handle."""
    from transformers import T5TokenizerFast

    pieces = [(f"\u2581{w}", -1.0 - i / 100) for i, w in enumerate(words)]  # sentencepiece's word-start mark
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def tiny_t5(vocab_size: int):
    """A T5 encoder of width 32 (the joint attention's text width of diffusers' SD3 and Flux test layouts)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0,
                                   pad_token_id=0, eos_token_id=1))


def make_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """Write a random SD3-shaped pipeline in the shape of diffusers' own SD3 test components: an MMDiT of one
    joint block (``sample_size=32, patch_size=1, attention_head_dim=8, num_attention_heads=4``, caption
    projection and joint width 32, pooled width 64), two CLIP encoders of width 32 with projections, a small T5
    encoder and its tokenizer (built in code), a one-block VAE with SD3's latent shift and scale, and the
    scheduler SD3 ships (flow-matching Euler, shift 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tok_dir = folder / "_tok"
    build_tokenizer(WORDS, tok_dir, max_length=77)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, pad_token="<|endoftext|>")
    tokenizer_2 = CLIPTokenizer.from_pretrained(tok_dir, pad_token="!")

    def clip() -> CLIPTextModelWithProjection:
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=5,
            num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer_2.pad_token_id))

    tokenizer_3 = t5_tokenizer()
    text_encoder_3 = tiny_t5(len(tokenizer_3))
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=clip(), text_encoder_2=clip(), text_encoder_3=text_encoder_3,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, tokenizer_3=tokenizer_3)
    out = folder / "sd3"
    pipe.save_pretrained(out)
    return out


def make_tiny_flux(folder: Path, seed: int = 0, guidance_embeds: bool = False) -> Path:
    """Write a random Flux-shaped pipeline in the shape of diffusers' own Flux test components: one double- and
    one single-stream block (``patch_size=1, in_channels=4, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]``), a CLIP encoder of width 32
    for the pooled embedding, a small T5 for the text tokens (config and tokenizer in code), a one-block VAE
    with one latent channel (four once packed) and Flux's shift and scale, and the scheduler Flux ships
    (flow-matching Euler with the resolution-dependent shift). ``guidance_embeds``: Flux-dev's distilled
    guidance input. Load it with :func:`load_mmdit` (the pipeline's default size is not in its files)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tok_dir = folder / "_tok"
    build_tokenizer(WORDS, tok_dir, max_length=77)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, pad_token="<|endoftext|>")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    tokenizer_2 = t5_tokenizer()
    text_encoder_2 = tiny_t5(len(tokenizer_2))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=guidance_embeds)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    pipe = FluxPipeline(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
    out = folder / f"flux{'-dev' if guidance_embeds else ''}"
    pipe.save_pretrained(out)
    return out


def load_mmdit(folder: Path, **options):
    """A tiny SD3 or Flux through obliviate, sampling 16 x 16 latents (SD3: 256 image tokens where its test
    layout's ``sample_size`` 32 makes 1024; Flux: 64 once packed, where its pipeline samples 1024 px)."""
    import obliviate

    pipe = obliviate.load_pipeline(str(folder), **options)
    pipe.default_sample_size = 16
    return pipe


def check_lora_round_trip(pipe, fresh, layers: list[tuple[str, str]], bench, folder: Path, scale: float = 1.0) -> None:
    """A random LoRA patch on ``layers`` ((component, module name) pairs) changes ``pipe``'s images, and its
    diffusers export, loaded by the family's own ``load_lora_weights`` into ``fresh`` (the same model, loaded
    again), draws the same images within 2/255."""
    import numpy as np

    import obliviate
    from obliviate.patch import Patch

    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for component, name in layers:
        out_f, in_f = getattr(pipe, component).get_submodule(name).weight.shape
        tensors[f"lora_down.{component}.{name}"] = torch.randn(2, in_f, generator=gen) * scale
        tensors[f"lora_up.{component}.{name}"] = torch.randn(out_f, 2, generator=gen) * scale
    patch = Patch(tensors, {"method": "test", "concepts": ["church"], "lora_scale": 0.7})
    ours = obliviate.generate(pipe, "a photo of the church", n=2, patch=patch, bench=bench, progress=False)
    base = obliviate.generate(pipe, "a photo of the church", n=2, bench=bench, progress=False)
    assert np.abs(ours.astype(int) - base.astype(int)).max() > 2  # the patch does change the images
    lora = patch.save_diffusers_lora(folder / "pytorch_lora_weights.safetensors")
    fresh.load_lora_weights(str(folder), weight_name=lora.name)
    theirs = obliviate.generate(fresh, "a photo of the church", n=2, bench=bench, progress=False)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
