"""P4D (Chin et al., "Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models by Finding Problematic
Prompts", ICML 2024): find a prompt under which the *edited* model predicts the noise the *base* model predicts
under the concept's prompt,

    p* = argmin_{p in V^N}  E_{x_t, t} || eps_theta'(x_t, p, t) - eps_theta(x_t, prompt_c, t) ||^2

(the paper's P4D-N: ``N`` free tokens, nothing of the concept's prompt kept). The attacker owns the base model:
its predictions are taken once, before the edit is in place, at points ``x_t`` on its own images of the concept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, images_to_latents, noised, randint, random_timesteps, training_scheduler
from ..families import Conditioning, encode, predict
from ..terms import distance
from .base import Probe, anchor_images
from .configs import P4DConfig
from .prompt_search import search_prompt

__all__ = ["P4DConfig", "prepare", "run"]


@dataclass
class BasePredictions:
    x_t: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor  # the base model's prediction under the concept's prompt


def prepare(pipe, concept: Concept, cfg: P4DConfig, catalog: Catalog) -> BasePredictions:
    images = anchor_images(pipe, catalog, concept, cfg.anchors, cfg.seed, cfg.images)
    latents = images_to_latents(pipe, images)
    gen = generator(cfg.seed, "p4d/points")
    sched = training_scheduler(pipe)
    z0 = latents[randint(len(latents), cfg.points, gen, latents.device)]
    t = random_timesteps(sched, cfg.points, gen, latents.device)
    x_t = noised(sched, z0, t, gen)
    cond = encode(pipe, list(concept.prompts))
    which = randint(len(concept.prompts), cfg.points, gen, cond.device)
    with torch.no_grad():
        eps = torch.cat([predict(pipe, x_t[i:i + 16], t[i:i + 16], cond[which[i:i + 16]])
                         for i in range(0, cfg.points, 16)])
    return BasePredictions(x_t, t, eps)


def run(pipe, concept: Concept, cfg: P4DConfig, catalog: Catalog, base: BasePredictions) -> Probe:
    n_tokens = min(cfg.n_tokens, pipe.tokenizer.model_max_length - 2)

    def prediction_gap(cond: Conditioning, gen: torch.Generator) -> torch.Tensor:
        i = randint(len(base.t), cfg.batch_size, gen, base.t.device)
        return distance(predict(pipe, base.x_t[i], base.t[i], cond.expand(len(i))), base.eps[i])

    found = search_prompt(pipe, ["{}"], n_tokens, prediction_gap, cfg.steps, cfg.lr, cfg.seed,
                          progress=cfg.progress, desc="p4d")
    return Probe([found])
