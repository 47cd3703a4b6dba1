"""Erased Stable Diffusion (Gandikota et al., ICCV 2023): negative-guidance fine-tuning.

On latents x_t reached by partially denoising the concept's prompt c (DDIM, guidance ``start_guidance``),

    L = || eps_theta'(x_t, c, t) - [ eps_theta(x_t, {}, t) - eta * (eps_theta(x_t, c, t) - eps_theta(x_t, {}, t)) ] ||^2

with theta frozen and eta = 1: whenever the concept is asked for, the model learns to steer *away* from it.
ESD-x edits attn2 only (IDs, objects, styles: the edit stays tied to the prompt); ESD-u edits everything but
attn2 (nudity and global concepts: the edit holds whatever words reach the concept). The target is an
affine combination of outputs, so it holds for velocity-predicting models unchanged.
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, partial_sampler, randint
from ..families import encode
from ..patch import Patch
from ..terms import distance, esd_point, esd_target, training_prompts
from .configs import ESDConfig
from .loop import Edit, LoopSettings, make_patch, train

__all__ = ["ESDConfig", "fit"]


def fit(pipe, concepts: list[Concept], cfg: ESDConfig, catalog: Catalog, method: str = "esd-x") -> Patch:
    """Erase ``concepts`` by negative guidance; the edited parameter set follows ``cfg.trainable``."""
    del catalog  # ESD needs only the concepts' prompts
    gen = generator(cfg.seed)
    prompts = [p for c in concepts for p in training_prompts(c, cfg.train_on)]
    conds = encode(pipe, prompts)
    uncond = encode(pipe, [""]).expand(cfg.batch_size)
    sampler = partial_sampler(pipe, cfg.ddim_steps)
    edit = Edit(pipe, cfg.trainable, seed=cfg.seed)
    draw = edit.edited if cfg.x_t_from == "edited" else edit.frozen

    def loss(step: int) -> torch.Tensor:
        cond = conds[randint(len(prompts), cfg.batch_size, gen, conds.device)]
        x_t, t = esd_point(pipe, draw, sampler, cond, uncond, gen, cfg.start_guidance, cfg.include_last_step)
        goal, *_ = esd_target(edit.frozen, x_t, t, cond, uncond, cfg.eta)
        return distance(edit.edited(x_t, t, cond), goal)

    settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, clip_grad=cfg.clip_grad, progress=cfg.progress)
    train(edit, loss, settings, f"{method} {', '.join(c.name for c in concepts)}")
    return make_patch(edit.tensors(), method, concepts, cfg)
