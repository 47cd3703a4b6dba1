"""Redirect (FMN's "concept correction"): the concept's prompts now draw another concept.

A distillation, not re-steering. On images of Y noised to a random t, the edited model asked for X must
predict what the base model predicts asked for Y; an anchor keeps every other concept's prompts unchanged:

    L = w_r * || eps_theta'(y_t, c_X, t) - eps_theta(y_t, c_Y, t) ||^2
        + w_p * E_j || eps_theta'(x_t, c_j, t) - eps_theta(x_t, c_j, t) ||^2

It must change what X's prompt *says*, so it edits all of attn2 (FMN's attention loss only fought it:
docs/methods.md).
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..catalog import Catalog, concept_images
from ..diffusion import generator, images_to_latents, noised, randint, random_timesteps, seed_stream, training_scheduler
from ..errors import ObliviateError
from ..families import Conditioning, encode
from ..patch import Patch
from ..terms import category_prompt, distance, keep_bank, keep_rows
from .configs import RedirectConfig
from .loop import Edit, LoopSettings, make_patch, train

__all__ = ["RedirectConfig", "fit"]


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
    images = concept_images(catalog, pipe, to, cfg.n_images, seed_stream(cfg.seed, f"images/{to.name}"), cfg.images)
    latents = images_to_latents(pipe, images)
    phrasing = catalog.bench.phrasing
    both = encode(pipe, [category_prompt(phrasing, source, source.name), category_prompt(phrasing, to, to.name)])
    ask, goal_cond = both[:1], both[1:]
    bank = keep_bank(pipe, catalog, [source], cfg.preserve, cfg.seed) if cfg.preserve_weight > 0 else None
    edit = Edit(pipe, cfg.trainable, cfg.rank, cfg.seed)
    b = cfg.batch_size

    def loss(step: int) -> torch.Tensor:
        t = random_timesteps(sched, b, gen, latents.device)
        rows = noised(sched, latents[randint(len(latents), b, gen, latents.device)], t, gen)
        if bank is None:
            return cfg.redirect_weight * distance(edit.edited(rows, t, ask.expand(b)),
                                                  edit.frozen(rows, t, goal_cond.expand(b)))
        kept = keep_rows(bank, sched, b, gen, t=t)
        x, t_all = torch.cat([rows, kept.x]), t.repeat(2)
        pred = edit.edited(x, t_all, Conditioning.cat([ask.expand(b), kept.cond]))
        goal = edit.frozen(x, t_all, Conditioning.cat([goal_cond.expand(b), kept.cond]))
        return cfg.redirect_weight * distance(pred[:b], goal[:b]) + cfg.preserve_weight * distance(pred[b:], goal[b:])

    settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, weight_decay=cfg.weight_decay,
                            lr_decay=cfg.lr_decay, progress=cfg.progress)
    train(edit, loss, settings, f"redirect {source.name} -> {to.name}")
    return make_patch(edit.tensors(), "redirect", concepts, cfg, redirect=to.name)
