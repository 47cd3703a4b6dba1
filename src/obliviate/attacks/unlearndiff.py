"""UnlearnDiffAtk (Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy
To Generate Unsafe Images ... For Now", ECCV 2024): the edited diffusion model is its own classifier. Prepend
``k`` tokens to the concept's prompt and choose them so that the *edited* model denoises images of the concept
well under that prompt,

    p* = argmin_{p in V^k}  E_{x0 ~ images of c, t, eps} || eps_theta'(x_t, [p; prompt_c], t) - eps ||^2

(no detector in the loop), with the discrete tokens found by the projected search of :mod:`.prompt_search`.
The images are the base model's generations of the concept, as in the paper.
"""

from __future__ import annotations

import numpy as np

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import images_to_latents, randint, training_scheduler
from ..families import Conditioning, predict
from ..terms import denoising_loss
from .base import Probe
from .configs import UnlearnDiffConfig
from .prompt_search import search_prompt

__all__ = ["UnlearnDiffConfig", "run"]


def run(pipe, concept: Concept, cfg: UnlearnDiffConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    sched = training_scheduler(pipe)
    latents = images_to_latents(pipe, images)
    n_prompts = len(concept.prompts)

    def denoising(cond: Conditioning, gen):
        return denoising_loss(sched, latents, cfg.batch_size, gen, lambda x_t, t: predict(
            pipe, x_t, t, cond[randint(n_prompts, cfg.batch_size, gen, cond.device)]))

    found = search_prompt(pipe, [f"{{}} {p}" for p in concept.prompts], cfg.n_tokens, denoising, cfg.steps,
                          cfg.lr, cfg.seed, progress=cfg.progress, desc="unlearndiff")
    return Probe([f"{found} {p}" for p in concept.prompts])
