"""UnlearnDiffAtk (Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy
To Generate Unsafe Images ... For Now", ECCV 2024): the edited diffusion model is its own classifier. Prepend
``k`` tokens to the concept's prompt and choose them so that the *edited* model denoises images of the concept
well under that prompt,

    p* = argmin_{p in V^k}  E_{x0 ~ images of c, t, eps} || eps_theta'(x_t, [p; prompt_c], t) - eps ||^2

(no detector in the loop), with the discrete tokens found by the projected search of :mod:`.prompt_search`.
The images are the base model's generations of the concept, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    denoising_batch,
    images_to_latents,
    randint,
    training_scheduler,
    training_target,
)
from .base import Probe
from .prompt_search import search_prompt


@dataclass
class UnlearnDiffConfig:
    n_tokens: int = 5  # the paper's prefix length
    steps: int = 300
    lr: float = 0.1
    batch_size: int = 8
    anchors: int = 16  # images of the concept the loss is taken on
    images: str | None = "generate"  # the base model's generations of the concept, or a folder
    seed: int = 0
    progress: bool = True


def run(pipe, concept: Concept, cfg: UnlearnDiffConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    sched = training_scheduler(pipe)
    latents = images_to_latents(pipe, images)
    n_prompts = len(concept.prompts)

    def denoising_loss(cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z0, noise, t, x_t = denoising_batch(sched, latents, cfg.batch_size, gen)
        prompt = randint(n_prompts, cfg.batch_size, gen, cond.device)
        pred = pipe.unet(x_t, t, encoder_hidden_states=cond[prompt]).sample
        return F.mse_loss(pred.float(), training_target(sched, z0, noise, t).float())

    found = search_prompt(pipe, [f"{{}} {p}" for p in concept.prompts], cfg.n_tokens, denoising_loss, cfg.steps,
                          cfg.lr, cfg.seed, progress=cfg.progress, desc="unlearndiff")
    return Probe([f"{found} {p}" for p in concept.prompts])
