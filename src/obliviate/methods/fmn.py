"""Forget-Me-Not (Zhang et al., CVPR-W 2024): attention re-steering.

On latents of the concept's images noised to a random t, with the prompt "a photo of X" ("... in the style
of X" for styles), minimise the attention the spatial queries of every attn2 layer pay to X's tokens:

    L_FMN = || concat_l softmax(Q_l K_l^T / sqrt(d))[:, X's tokens] ||_2

plus (obliviate's addition, ``preserve_weight``; 0 gives the paper's loss) a distillation anchor that keeps
the edited model's output for the other concepts' prompts equal to the base model's:

    L = L_FMN + lambda * E_j || eps_theta'(x_t, c_j, t) - eps_theta(x_t, c_j, t) ||^2

Optional stage A (``inversion_tokens``): textual inversion of new tokens on the concept's images, which the
re-steering then targets instead of the concept's words. Why each departure from the paper: docs/methods.md.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import AttnCall, attn2_processors, token_positions
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
from ..inversion import InversionConfig, installed, invert
from ..patch import Patch
from .keep import keep_bank
from .loop import Edit, LoopSettings, make_patch, train


@dataclass
class FMNConfig:
    """Defaults tuned on the world (docs/benchmarks.md); the public code's are lr 2e-6, 35 steps, batch 1."""

    steps: int = 60  # per concept (x the number of concepts)
    lr: float = 6e-3
    batch_size: int = 4
    weight_decay: float = 0.01
    trainable: str = "attn2-qk"  # attn2-qk, attn2, unet or lora (docs/methods.md: why q/k)
    rank: int = 4  # LoRA rank with trainable="lora"
    inversion_tokens: int = 0  # stage A: learn this many tokens first (0: off)
    inversion_steps: int = 150
    images: str | None = None  # None: the catalog's images; "generate": the base model's; or a folder
    n_images: int = 32
    include_eot: bool = False  # also re-steer the first end-of-text token
    include_context: bool = True  # mask from the concept's first token to the end (pads carry it too)
    preserve_weight: float = 300.0  # the anchor on other concepts (0: the paper's loss alone)
    preserve: tuple[str, ...] | None = None  # concepts to keep; None: every other concept of the catalog
    lr_decay: bool = False
    seed: int = 0
    progress: bool = True


def fmn_prompt(catalog: Catalog, concept: Concept, phrase: str) -> str:
    """FMN's prompt: the bench's phrasing of the concept's category, else the paper's ("a photo in the style
    of X" for styles, "a photo of X" otherwise)."""
    own = catalog.bench.phrasing.get(concept.category)
    if own is not None:
        return own.replace("{name}", phrase)
    return f"a photo in the style of {phrase}" if concept.category == "style" else f"a photo of {phrase}"


def from_first(mask: torch.Tensor) -> torch.Tensor:
    """Extend each row's mask from its first selected token to the end (end-of-text and pads)."""
    first = mask.float().argmax(1, keepdim=True)
    return torch.arange(mask.shape[1]).unsqueeze(0) >= first


@dataclass
class _Job:
    """One concept's re-steering data: clean latents, the prompt's text states and its token mask."""

    latents: torch.Tensor
    cond: torch.Tensor  # (1, L, d)
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
    prompt = [fmn_prompt(catalog, concept, phrase)]
    mask = token_positions(pipe.tokenizer, prompt, words, cfg.include_eot)
    return _Job(images_to_latents(pipe, images), encode_prompts(pipe, prompt), from_first(mask)
                if cfg.include_context else mask)


def fit(pipe, concepts: list[Concept], cfg: FMNConfig, catalog: Catalog) -> Patch:
    """Erase ``concepts`` (all in one run, ``cfg.steps`` each) and return the edit as a Patch."""
    sched = training_scheduler(pipe)
    gen = generator(cfg.seed)
    device = pipe.unet.device
    with ExitStack() as stack:
        jobs = [_job(pipe, catalog, c, cfg, stack) for c in concepts]
        keep = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed) if cfg.preserve_weight > 0 else None
        stack.enter_context(attn2_processors(pipe.unet))
        edit = Edit(pipe.unet, cfg.trainable, cfg.rank, cfg.seed)
        b = cfg.batch_size

        def loss(step: int) -> torch.Tensor:
            job = jobs[step % len(jobs)]
            t = random_timesteps(sched, b, gen, device)
            rows = noised(sched, job.latents[randint(len(job.latents), b, gen, device)], t, gen)
            call = AttnCall(token_mask=job.mask.expand(b, -1))
            if keep is None:  # the paper's loss alone
                edit.edited(rows, t, job.cond.expand(b, -1, -1), call)
                return call.collected().norm()
            # one batched forward: rows [0, b) carry the re-steering loss, rows [b, 2b) the anchor
            j = randint(len(keep.cond), b, gen, device)
            kept = noised(sched, keep.latents[j], t, gen) if keep.latents is not None else rows
            call.token_mask = torch.cat([call.token_mask, torch.zeros_like(call.token_mask)])
            goal = edit.frozen(kept, t, keep.cond[j])
            pred = edit.edited(torch.cat([rows, kept]), t.repeat(2), torch.cat([job.cond.expand(b, -1, -1),
                                                                                keep.cond[j]]), call)
            return call.collected().norm() + cfg.preserve_weight * F.mse_loss(pred[b:].float(), goal.float())

        settings = LoopSettings(steps=cfg.steps * len(jobs), lr=cfg.lr, seed=cfg.seed, weight_decay=cfg.weight_decay,
                                lr_decay=cfg.lr_decay, progress=cfg.progress)
        train(edit, loss, settings, f"fmn {', '.join(c.name for c in concepts)}")
        return make_patch(edit.tensors(), "fmn", concepts, cfg)
