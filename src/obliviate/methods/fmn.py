"""Forget-Me-Not (Zhang et al., CVPR-W 2024): attention re-steering.

On latents of the concept's images noised to a random t, with the prompt "a photo of X" ("... in the style
of X" for styles), minimise the attention the spatial queries of every attn2 layer pay to X's tokens:

    L_FMN = || concat_l softmax(Q_l K_l^T / sqrt(d))[:, X's tokens] ||_2

plus (obliviate's addition, ``preserve_weight``; 0 gives the paper's loss) the keep term, a distillation
anchor that keeps the edited model's output for the other concepts' prompts equal to the base model's:

    L = L_FMN + lambda * E_j || eps_theta'(x_j, c_j, t) - eps_theta(x_j, c_j, t) ||^2

Optional stage A (``inversion_tokens``): textual inversion of new tokens on the concept's images, which the
re-steering then targets instead of the concept's words. Why each departure from the paper: docs/methods.md.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch

from ..attention import AttnCall
from ..bench import Concept
from ..catalog import Catalog, concept_images
from ..diffusion import generator, images_to_latents, noised, randint, random_timesteps, seed_stream, training_scheduler
from ..families import Conditioning, attention, encode
from ..inversion import InversionConfig, installed, invert
from ..patch import Patch
from ..terms import category_prompt, distance, keep_bank, keep_rows, token_positions
from .configs import FMNConfig
from .loop import Edit, LoopSettings, make_patch, train

__all__ = ["FMNConfig", "fit"]


def from_first(mask: torch.Tensor) -> torch.Tensor:
    """Extend each row's mask from its first selected token to the end (end-of-text and pads)."""
    first = mask.float().argmax(1, keepdim=True)
    return torch.arange(mask.shape[1]).unsqueeze(0) >= first


@dataclass
class _Job:
    """One concept's re-steering data: clean latents, the prompt's conditioning and its token mask."""

    latents: torch.Tensor
    cond: Conditioning  # one row
    mask: torch.Tensor  # (1, L)


def _job(pipe, catalog: Catalog, concept: Concept, cfg: FMNConfig, stack: ExitStack) -> _Job:
    images = concept_images(catalog, pipe, concept, cfg.n_images, seed_stream(cfg.seed, f"images/{concept.name}"),
                            cfg.images)
    words, phrase = [concept.name], concept.name
    if cfg.inversion_tokens:
        learned = invert(pipe, images, InversionConfig(n_tokens=cfg.inversion_tokens, steps=cfg.inversion_steps,
                                                       seed=cfg.seed, progress=cfg.progress),
                         init_words=[concept.name])
        phrase, words = stack.enter_context(installed(pipe, learned)), learned.tokens
    prompt = [category_prompt(catalog.bench.phrasing, concept, phrase)]
    mask = token_positions(pipe, prompt, words, cfg.include_eot)
    return _Job(images_to_latents(pipe, images), encode(pipe, prompt), from_first(mask)
                if cfg.include_context else mask)


def fit(pipe, concepts: list[Concept], cfg: FMNConfig, catalog: Catalog) -> Patch:
    """Erase ``concepts`` (all in one run, ``cfg.steps`` each) and return the edit as a Patch."""
    sched = training_scheduler(pipe)
    gen = generator(cfg.seed)
    with ExitStack() as stack:
        jobs = [_job(pipe, catalog, c, cfg, stack) for c in concepts]
        bank = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed) if cfg.preserve_weight > 0 else None
        stack.enter_context(attention(pipe))
        edit = Edit(pipe, cfg.trainable, cfg.rank, cfg.seed)
        b = cfg.batch_size

        def loss(step: int) -> torch.Tensor:
            job = jobs[step % len(jobs)]
            device = job.latents.device
            t = random_timesteps(sched, b, gen, device)
            rows = noised(sched, job.latents[randint(len(job.latents), b, gen, device)], t, gen)
            call = AttnCall(token_mask=job.mask.expand(b, -1))
            if bank is None:  # the paper's loss alone
                edit.edited(rows, t, job.cond.expand(b), call)
                return call.collected().norm()
            # one batched forward: rows [0, b) carry the re-steering loss, rows [b, 2b) the keep term
            kept = keep_rows(bank, sched, b, gen, t=t)
            call.token_mask = torch.cat([call.token_mask, torch.zeros_like(call.token_mask)])
            both = Conditioning.cat([job.cond.expand(b), kept.cond])
            pred = edit.edited(torch.cat([rows, kept.x]), t.repeat(2), both, call)
            return call.collected().norm() + cfg.preserve_weight * distance(pred[b:], edit.frozen(kept.x, t, kept.cond))

        settings = LoopSettings(steps=cfg.steps * len(jobs), lr=cfg.lr, seed=cfg.seed, weight_decay=cfg.weight_decay,
                                lr_decay=cfg.lr_decay, progress=cfg.progress)
        train(edit, loss, settings, f"fmn {', '.join(c.name for c in concepts)}")
        return make_patch(edit.tensors(), "fmn", concepts, cfg)
