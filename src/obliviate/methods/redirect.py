"""Redirect (FMN's "concept correction"): the concept's prompts now draw another concept.

A distillation, not re-steering. On images of Y noised to a random t, the edited model asked for X must
predict what the base model predicts asked for Y; an anchor keeps every other concept's prompts unchanged:

    L = w_r * || eps_theta'(y_t, c_X, t) - eps_theta(y_t, c_Y, t) ||^2
        + w_p * E_j || eps_theta'(x_t, c_j, t) - eps_theta(x_t, c_j, t) ||^2

It must change what X's prompt *says*, so it edits all of attn2 (FMN's attention loss only fought it:
docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bench import Concept
from ..catalog import Catalog, concept_images
from ..diffusion import (
    encode_prompts,
    generator,
    images_to_latents,
    noised,
    randint,
    random_timesteps,
    seed_stream,
    training_scheduler,
)
from ..errors import ObliviateError
from ..patch import Patch
from .fmn import fmn_prompt
from .keep import keep_bank
from .loop import Edit, LoopSettings, make_patch, train


@dataclass
class RedirectConfig:
    redirect: str | None = None  # the concept X's prompts should draw (required)
    steps: int = 60
    lr: float = 3e-3
    batch_size: int = 4
    weight_decay: float = 0.01
    trainable: str = "attn2"
    rank: int = 4
    images: str | None = None  # images of the redirect concept; None: the catalog's
    n_images: int = 32
    redirect_weight: float = 100.0
    preserve_weight: float = 100.0
    preserve: tuple[str, ...] | None = None
    lr_decay: bool = True
    seed: int = 0
    progress: bool = True


def fit(pipe, concepts: list[Concept], cfg: RedirectConfig, catalog: Catalog) -> Patch:
    """Make ``concepts[0]``'s prompts draw ``cfg.redirect``."""
    if len(concepts) != 1:
        raise ObliviateError("redirect takes one concept (and --redirect names where it goes)")
    if not cfg.redirect:
        raise ObliviateError("redirect needs the concept to redirect to (--redirect NAME)")
    source, to = concepts[0], catalog.concept(cfg.redirect)
    if to.name == source.name:
        raise ObliviateError(f"cannot redirect {source.name!r} to itself")
    sched = training_scheduler(pipe)
    gen = generator(cfg.seed)
    device = pipe.unet.device
    images = concept_images(catalog, pipe, to, cfg.n_images, seed_stream(cfg.seed, f"images/{to.name}"), cfg.images)
    latents = images_to_latents(pipe, images)
    ask, goal_cond = encode_prompts(pipe, [fmn_prompt(catalog, source, source.name),
                                                fmn_prompt(catalog, to, to.name)]).chunk(2)
    keep = keep_bank(pipe, catalog, [source], cfg.preserve, cfg.seed) if cfg.preserve_weight > 0 else None
    edit = Edit(pipe.unet, cfg.trainable, cfg.rank, cfg.seed)
    b = cfg.batch_size

    def loss(step: int) -> torch.Tensor:
        t = random_timesteps(sched, b, gen, device)
        rows = noised(sched, latents[randint(len(latents), b, gen, device)], t, gen)
        x, ts, conds, goal_conds = [rows], [t], [ask.expand(b, -1, -1)], [goal_cond.expand(b, -1, -1)]
        if keep is not None:
            j = randint(len(keep.cond), b, gen, device)
            x.append(noised(sched, keep.latents[j], t, gen) if keep.latents is not None else rows)
            ts.append(t)
            conds.append(keep.cond[j])
            goal_conds.append(keep.cond[j])
        x, t_all = torch.cat(x), torch.cat(ts)
        goal = edit.frozen(x, t_all, torch.cat(goal_conds)).float()
        pred = edit.edited(x, t_all, torch.cat(conds)).float()
        value = cfg.redirect_weight * F.mse_loss(pred[:b], goal[:b])
        if keep is not None:
            value = value + cfg.preserve_weight * F.mse_loss(pred[b:], goal[b:])
        return value

    settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, weight_decay=cfg.weight_decay,
                            lr_decay=cfg.lr_decay, progress=cfg.progress)
    train(edit, loss, settings, f"redirect {source.name} -> {to.name}")
    return make_patch(edit.tensors(), "redirect", concepts, cfg, redirect=to.name)
