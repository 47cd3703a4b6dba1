"""Architectures of the world: a tiny Stable Diffusion (diffusers/transformers classes) and the detector.

The pipeline parts are the real SD classes with small widths, so every method that works here runs the
same code path on SD 1.x/2.x. The detector is a small CNN with one head per concept category; its
penultimate features are what the drift metrics compare.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from .domain import CATEGORY_CLASSES, IMAGE_SIZE


@dataclass
class ArchConfig:
    """Widths of the world's networks (defaults fit the 30-minute CPU build)."""

    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    text_width: int = 64
    text_layers: int = 3
    max_length: int = 24


def make_vae(cfg: ArchConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n, block_out_channels=list(cfg.vae_channels), layers_per_block=1,
        latent_channels=cfg.latent_channels, norm_num_groups=16, sample_size=IMAGE_SIZE,
    )


def make_unet(cfg: ArchConfig) -> UNet2DConditionModel:
    latent = IMAGE_SIZE // 2 ** (len(cfg.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=latent, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=tuple(cfg.unet_channels), layers_per_block=1, cross_attention_dim=cfg.text_width,
        attention_head_dim=8, norm_num_groups=16,
    )


def make_text_encoder(cfg: ArchConfig, vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=cfg.max_length,
        projection_dim=cfg.text_width, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    ))


def make_scheduler() -> DDIMScheduler:
    """SD 1.x's noise schedule with a DDIM sampler (deterministic, and what ESD's partial sampling uses)."""
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


class Detector(nn.Module):
    """Small CNN: one classification head per concept category over shared 128-d features."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.width = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({cat: nn.Linear(4 * width, len(cls)) for cat, cls in CATEGORY_CLASSES.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [-1, 1], shape (N, 3, 32, 32)."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(images)
        return {cat: head(feats) for cat, head in self.heads.items()}

    def save(self, path: Path) -> None:
        tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()
                   if v.dtype.is_floating_point}
        save_file(tensors, str(path), metadata={"config": json.dumps({"width": self.width}),
                                                "classes": json.dumps(CATEGORY_CLASSES)})

    @classmethod
    def load(cls, path: Path) -> Detector:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        det = cls(**json.loads(meta["config"]))
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        det.load_state_dict(state, strict=False)  # integer BatchNorm counters are not stored
        return det.eval()


def arch_to_json(cfg: ArchConfig) -> dict:
    return asdict(cfg)
