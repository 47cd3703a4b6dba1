"""Erased Stable Diffusion (Gandikota et al., ICCV 2023): negative-guidance fine-tuning.

On latents x_t reached by partially denoising the concept's prompt c (DDIM, guidance ``start_guidance``),

    L = || eps_theta'(x_t, c, t) - [ eps_theta(x_t, {}, t) - eta * (eps_theta(x_t, c, t) - eps_theta(x_t, {}, t)) ] ||^2

with theta frozen and eta = 1: whenever the concept is asked for, the model learns to steer *away* from it.
ESD-x edits attn2 only (IDs, objects, styles: the edit stays tied to the prompt); ESD-u edits everything but
attn2 (nudity and global concepts: the edit holds whatever words reach the concept). The target is an
affine combination of outputs, so it holds for velocity-predicting models unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    ddim_scheduler,
    encode_prompts,
    generator,
    latent_shape,
    partial_sample,
    predict_each,
    randint,
    randn,
    random_stop,
)
from ..errors import ObliviateError
from ..patch import Patch
from .loop import Edit, LoopSettings, make_patch, train

SAMPLERS = ("edited", "frozen")


@dataclass
class ESDConfig:
    """World defaults (docs/benchmarks.md); the public code: 200 iterations, batch 1, lr 5e-5, DDIM 50."""

    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 4
    eta: float = 1.0
    ddim_steps: int = 10  # partial sampling; the world's sampler uses 20
    start_guidance: float = 3.0
    trainable: str = "attn2"  # esd-x; esd-u uses "non-attn2"
    x_t_from: str = "frozen"  # which model draws x_t: "frozen" (kinder to neighbours) or "edited" (the paper)
    train_on: str = "named"  # "name": the concept's name only (the authors' scripts); "named": + prompts naming it
    clip_grad: float | None = None  # the authors clip nothing
    include_last_step: bool = False  # also train at x_t after the last sampler step (t = 1; docs/methods.md)
    seed: int = 0
    progress: bool = True


def training_prompts(concept: Concept, train_on: str = "named") -> list[str]:
    """The concept by its own name (as ESD trains on "nudity" or an artist's name), with ``named`` also the
    catalog prompts that name it: prompts that reach it only through synonyms are left to the evaluation,
    which then measures generalisation, not memorisation."""
    if train_on not in ("name", "named"):
        raise ObliviateError(f"train_on must be 'name' or 'named', got {train_on!r}")
    named = [p for p in concept.prompts if concept.name in p.split()] if train_on == "named" else []
    return list(dict.fromkeys([concept.name, *named]))


def negative_guidance(e_uncond: torch.Tensor, e_cond: torch.Tensor, eta: float) -> torch.Tensor:
    return e_uncond - eta * (e_cond - e_uncond)


def fit(pipe, concepts: list[Concept], cfg: ESDConfig, catalog: Catalog, method: str = "esd-x") -> Patch:
    """Erase ``concepts`` by negative guidance; the edited parameter set follows ``cfg.trainable``."""
    del catalog  # ESD needs only the concepts' prompts
    if cfg.x_t_from not in SAMPLERS:
        raise ObliviateError(f"x_t_from must be one of {', '.join(SAMPLERS)}, got {cfg.x_t_from!r}")
    if cfg.ddim_steps < 1:
        raise ObliviateError(f"ddim_steps must be at least 1, got {cfg.ddim_steps}")
    gen = generator(cfg.seed)  # one stream for the loop; draws in the order of the pre-API code (same figures)
    device = pipe.unet.device
    prompts = [p for c in concepts for p in training_prompts(c, cfg.train_on)]
    conds = encode_prompts(pipe, prompts)
    uncond = encode_prompts(pipe, [""]).expand(cfg.batch_size, -1, -1)
    sampler = ddim_scheduler(pipe, cfg.ddim_steps)
    edit = Edit(pipe.unet, cfg.trainable, seed=cfg.seed)
    draw = edit.edited if cfg.x_t_from == "edited" else edit.frozen

    def loss(step: int) -> torch.Tensor:
        cond = conds[randint(len(prompts), cfg.batch_size, gen, device)]
        stop = random_stop(cfg.ddim_steps, gen, cfg.include_last_step)
        start = randn(latent_shape(pipe, cfg.batch_size), gen, cond)
        with torch.no_grad():
            x_t, t = partial_sample(draw, sampler, start, cond, uncond, stop, cfg.start_guidance)
        goal = negative_guidance(*predict_each(edit.frozen, (x_t, t, uncond), (x_t, t, cond)), cfg.eta)
        return F.mse_loss(edit.edited(x_t, t, cond).float(), goal.float())

    settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, clip_grad=cfg.clip_grad, progress=cfg.progress)
    train(edit, loss, settings, f"{method} {', '.join(c.name for c in concepts)}")
    return make_patch(edit.tensors(), method, concepts, cfg)
