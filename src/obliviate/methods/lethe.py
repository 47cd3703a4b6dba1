"""Lethe: obliviate's erasure, built against the attacks that bring erased concepts back.

Every published edit removes a *route* to the concept (its words, the embeddings an adversary found) and
leaves the denoiser able to draw it. Lethe trains the denoiser itself on noised images of the concept, under
every conditioning an attacker could supply, to denoise them into images *without* it, and distils the rest:

    x_t = sqrt(a_t) x0_c + sqrt(1 - a_t) eps,            x0_c ~ images of the concept, t in [t_min, t_max]
    L_forget = E || f_theta'(x_t, y, t) - target(x0_a | x_t, t) ||^2,   y ~ {c's prompts, anchor prompts, the
                                                                         neutral prompt, adversarial y}
    L_keep   = E || f_theta'(x_k, y_k, t) - f_theta(x_k, y_k, t) ||^2  (the keep term: other concepts' prompts,
                                                                       or the neutral prompt, on their images)
    L = L_forget + lambda * L_keep

``target(x0_a | x_t, t)`` is the output that denoises x_t into x0_a, what the base model draws for the concept's
prompt with its words removed (the anchor). The adversarial y are concept inversion's tokens against the edit
so far (``rounds``, STEREO's stage one) and, with ``adversary``, a persistent inversion adversary that follows
the edit at every step (:mod:`.adversaries`). ``neutral_rows`` adds forget rows under the neutral prompt alone
(what completion and the sampler's unconditional branch denoise with); ``keep_neighbours`` draws that share of
the keep rows from the erased concepts' own categories. docs/methods.md gives the reasons, measured.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    denoising_to,
    generator,
    images_to_latents,
    predict_each,
    randint,
    randn,
    seed_stream,
    timesteps_in,
    training_scheduler,
)
from ..families import Conditioning, encode
from ..generation import generate, image_seeds
from ..inversion import InversionConfig, invert
from ..patch import Patch
from ..terms import distance, embedding_prompts, keep_bank, keep_rows, swap, training_prompts
from .adversaries import InversionAdversaryRun
from .configs import LetheConfig
from .loop import Edit, LoopSettings, make_patch, train

__all__ = ["Forget", "LetheConfig", "fit"]


@dataclass
class Forget:
    """What the forget term draws from (a hiding design adds terms on it): the concepts' images as latents
    (``n_images`` each, in concept order) and the anchors they are denoised toward."""

    pipe: object
    edit: Edit
    sched: object
    gen: torch.Generator
    concepts: list[Concept]
    latents: torch.Tensor
    anchors: torch.Tensor
    n_images: int
    batch_size: int
    seed: int
    t_range: tuple[float, float]

    def rows(self, i: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``i`` noised to random levels in the forget range, with their target: each denoised toward
        anchor ``a``."""
        t = timesteps_in(self.sched, *self.t_range, len(i), self.gen, i.device)
        x_t = self.sched.add_noise(self.latents[i], randn(tuple(self.latents[i].shape), self.gen, self.latents), t)
        return x_t, t, denoising_to(self.sched, self.anchors[a], x_t, t)


def _anchors(pipe, catalog: Catalog, named: list[tuple[Concept, str]], n: int, seed: int, like: torch.Tensor):
    """Latents of what the base model draws for the concepts' prompts with their words removed (an unconditional
    model has no such prompt: the mean latent, a flat image)."""
    neutral = catalog.bench.neutral
    drawn = [a for a in dict.fromkeys(swap(p, c, "") for c, p in named) if a.strip()] or \
        ([neutral] if neutral.strip() else [])
    if not drawn:
        return torch.zeros_like(like)
    prompts, seeds = [drawn[i % len(drawn)] for i in range(n)], image_seeds(seed_stream(seed, "lethe/anchor"), n)
    images = generate(pipe, prompts, seeds, catalog.sampler.steps, catalog.sampler.guidance, progress=False)
    return images_to_latents(pipe, images)


def fit(pipe, concepts: list[Concept], cfg: LetheConfig, catalog: Catalog,
        extra: Callable[[Forget], Callable[[int], torch.Tensor]] | None = None) -> Patch:
    """Erase ``concepts``; ``extra`` builds one more loss term on the forget state (hiding's weight adversary)."""
    gen, sched, neutral, b = generator(cfg.seed), training_scheduler(pipe), catalog.bench.neutral, cfg.batch_size
    named = [(c, p) for c in concepts for p in training_prompts(c)]
    bank = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed)
    conds = encode(pipe, list(dict.fromkeys([p for _, p in named] + [swap(p, c, "") for c, p in named] + [neutral])))
    images = [catalog.images(pipe, c, cfg.n_images, seed_stream(cfg.seed, f"lethe/{c.name}")) for c in concepts]
    latents = torch.cat([images_to_latents(pipe, im) for im in images])
    n = cfg.n_images * len(concepts)
    uncond = encode(pipe, [neutral])
    edit = Edit(pipe, cfg.trainable, seed=cfg.seed)
    forget = Forget(pipe, edit, sched, gen, concepts, latents, _anchors(pipe, catalog, named, n, cfg.seed, latents),
                    cfg.n_images, b, cfg.seed, (cfg.t_min, cfg.t_max))
    term = extra(forget) if extra is not None else None
    categories = {c.category for c in concepts}
    near = [j for j, c in enumerate(bank.categories) if c in categories] if bank and cfg.keep_neighbours else []
    near = torch.tensor(near, dtype=torch.long, device=latents.device) if near else None
    state = {"conds": conds}  # the forget term's conditionings: they grow each round

    def loss(step: int) -> torch.Tensor:
        m = b - b // 2 if adversary is not None else 0  # extra rows under what the adversary found against the edit
        e = cfg.neutral_rows  # and under the neutral prompt alone
        i, a = randint(n, b + m + e, gen, latents.device), randint(len(forget.anchors), b + m + e, gen, latents.device)
        x_t, t, goal = forget.rows(i, a)
        y = [state["conds"][randint(len(state["conds"]), b, gen, latents.device)]]
        y += [adversary.step(edit, sched, latents).expand(m)] if adversary is not None else []
        y = Conditioning.cat(y + ([uncond.expand(e)] if e else []))
        if bank is None or not cfg.keep_weight:
            value = distance(edit.edited(x_t, t, y), goal)
            return value + term(step) if term else value
        kept = keep_rows(bank, sched, b, gen, near=near, share=cfg.keep_neighbours)
        yk = Conditioning.where(torch.rand(b, generator=gen) < 0.5, kept.cond, uncond.expand(b))
        forgot, retained = predict_each(edit.edited, (x_t, t, y), (kept.x, kept.t, yk))
        value = distance(forgot, goal) + term(step) if term else distance(forgot, goal)
        return value + cfg.keep_weight * distance(retained, edit.frozen(kept.x, kept.t, yk))

    found: list[torch.Tensor] = []
    phases = [cfg.steps // (cfg.rounds + 1)] * cfg.rounds
    phases.append(cfg.steps - sum(phases))
    adversarial = InversionAdversaryRun(pipe, cfg.adversary, cfg.inversion_tokens, generator(
        cfg.seed, "lethe/adversary"), "lethe_adv") if cfg.adversary else nullcontext()
    with adversarial as adversary:
        for r, steps in enumerate(phases):
            if r:  # the edit so far: find the embeddings that still reach each concept, and forget under them too
                with Patch(edit.tensors()).applied(pipe, force=True):
                    for k in range(len(concepts)):
                        found.append(invert(pipe, images[k], InversionConfig(
                            n_tokens=cfg.inversion_tokens, steps=cfg.inversion_steps,
                            seed=seed_stream(cfg.seed, f"lethe/{r}/{k}"), progress=False)).embeddings)
                state["conds"] = Conditioning.cat([conds, embedding_prompts(pipe, found)])
            settings = LoopSettings(steps=steps, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress)
            train(edit, loss, settings, f"lethe {', '.join(c.name for c in concepts)} ({r + 1}/{len(phases)})")
    return make_patch(edit.tensors(), "lethe", concepts, cfg, adversarial_embeddings=len(found))
