"""Forget-Me-Not (Zhang et al., CVPR-W 2024): attention re-steering.

Stage A (optional): textual inversion of ``k`` tokens on images of the concept.
Stage B: on noised latents of the concept's images, prompt "a photo of X" ("… in the style of X" for
styles) and minimise  L = || concat over attn2 layers of softmax(QK^T) restricted to X's tokens ||_2,
editing only attn2 (default), the whole UNet, or a LoRA on attn2. The noise prediction is not used.

Our addition, ``preserve_weight`` (default on; 0 gives the paper's loss exactly): the paper has no
preservation term, and on the world the cheapest way to lower attention on X is to move *all* attention
onto the start token, which erases everything (measured: efficacy 0.94 at preservation 0.48). A
distillation term that keeps the edited model's noise prediction for the other concepts' prompts equal to
the frozen model's rules that shortcut out and leaves only the concept-specific edit.
``include_context`` (default on; off gives the paper's mask): in a causal text encoder every token after
the concept's carries it too, and SD 1.x pads with end-of-text, so attention that leaves the concept's own
tokens still finds it in the pads (on the world the spatial queries spend about 70% of their attention
on pads, 6% on the concept token). The mask therefore runs from the concept's first token to the end.
Redirect (concept correction) adds a distillation term that makes the model's prediction for X's prompt
match the frozen model's prediction for Y's prompt on images of Y.
"""

from __future__ import annotations

import copy
import time
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attention import Attn2Processor, Capture, attn2_processors, token_positions
from ..errors import ObliviateError
from ..inversion import InversionConfig, images_to_latents, installed, invert
from ..patch import Patch
from ..pipeline import Model
from .common import concept_images, config_dict, editing, encode_prompts, fmn_prompt, take_patch
from .concepts import Target, preserved_concepts, resolve_target


@dataclass
class FMNConfig:
    """Defaults tuned on the world (see docs/benchmarks.md); the public code's are lr 2e-6, 35 steps, batch 1."""

    steps: int = 60
    lr: float = 3e-3
    batch_size: int = 4
    weight_decay: float = 0.01
    trainable: str = "attn2"
    rank: int = 4
    inversion_tokens: int = 0
    inversion_steps: int = 150
    images: str | None = None  # "world", "generate" or a folder; default: world renderings on the world
    n_images: int = 32
    include_eot: bool = False
    include_context: bool = True  # also the tokens after the concept (end-of-text and pads): see below
    redirect: str | None = None
    redirect_weight: float = 1.0
    preserve_weight: float = 100.0
    preserve: tuple[str, ...] | None = None  # concepts to keep; None: every other concept of the bench
    seed: int = 0
    progress: bool = True


@dataclass
class _Job:
    target: Target
    latents: torch.Tensor
    cond: torch.Tensor   # (1, L, d) text-encoder output for the FMN prompt
    mask: torch.Tensor   # (1, L) concept token positions


def _prepare(model: Model, target: Target, cfg: FMNConfig, stack: ExitStack) -> _Job:
    pipe = model.pipe
    images = concept_images(model, target.name, list(target.prompts), cfg.images, cfg.n_images, cfg.seed)
    latents = images_to_latents(model, images)
    words = list(target.words)
    if cfg.inversion_tokens:
        learned = invert(model, images, InversionConfig(n_tokens=cfg.inversion_tokens, steps=cfg.inversion_steps,
                                                        seed=cfg.seed, progress=cfg.progress),
                         init_words=[target.name])
        phrase = stack.enter_context(installed(model, learned))
        words = learned.tokens
    else:
        phrase = target.name
    prompt = fmn_prompt(target.category, phrase)
    mask = token_positions(pipe.tokenizer, [prompt], words if cfg.inversion_tokens else [target.name],
                           cfg.include_eot)
    if cfg.include_context:
        mask = _and_following(mask)
    cond = encode_prompts(model, [prompt])
    return _Job(target, latents, cond, mask)


def _and_following(mask: torch.Tensor) -> torch.Tensor:
    """Extend each row's mask from its first concept token to the end (end-of-text and pads)."""
    first = mask.float().argmax(1, keepdim=True)
    return torch.arange(mask.shape[1]).unsqueeze(0) >= first


def _redirect_bank(model: Model, job: _Job, to: Target, cfg: FMNConfig, gen: torch.Generator) -> tuple:
    """Noised latents of Y's images and the frozen model's prediction for Y's prompt on them."""
    images = concept_images(model, to.name, list(to.prompts), cfg.images, cfg.n_images, cfg.seed + 1)
    z0 = images_to_latents(model, images)
    sched = model.pipe.scheduler
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=gen)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    cond_y = encode_prompts(model, [fmn_prompt(to.category, to.name)]).expand(len(z0), -1, -1)
    with torch.no_grad():
        target = model.pipe.unet(zt, t, cond_y).sample
    return zt, t, target


@dataclass
class _KeepBank:
    """Prompts of the concepts to keep, each paired with a clean latent to noise (its own image on the world)."""

    cond: torch.Tensor             # (P, L, d) text-encoder outputs
    latents: torch.Tensor | None   # (P, C, h, w); None: noise the target's latents instead


def _preserve_bank(model: Model, erased: list[Target], cfg: FMNConfig) -> _KeepBank | None:
    """What the preservation term anchors (None when it is off)."""
    if cfg.preserve_weight <= 0:
        return None
    kept = preserved_concepts(model, erased, cfg.preserve)
    words = {w for t in erased for w in t.words}
    pairs = [(k, p) for k in kept for p in k.prompts if not words & set(p.split())]
    if not pairs:
        return None
    prompts = [p for _, p in pairs]
    cond = encode_prompts(model, prompts)
    latents = None
    if model.is_world:  # renderings are free on the world; elsewhere generating them would cost minutes
        images = {k.name: concept_images(model, k.name, list(k.prompts), "world", len(k.prompts), cfg.seed + 7)
                  for k in kept}
        seen: dict[str, int] = {}
        rows = []
        for k, _ in pairs:
            i = seen.get(k.name, 0)
            seen[k.name] = i + 1
            rows.append(images[k.name][i % len(images[k.name])])
        latents = images_to_latents(model, np.stack(rows))
    return _KeepBank(cond, latents)


def fit(model: Model, concepts: list[str], cfg: FMNConfig) -> Patch:
    """Erase ``concepts`` (all in one run) and return the edit as a Patch."""
    start = time.time()
    if not concepts:
        raise ObliviateError("no concept to erase")
    pipe = model.pipe
    unet = pipe.unet
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    targets = [resolve_target(model, c) for c in concepts]
    redirect = resolve_target(model, cfg.redirect) if cfg.redirect else None
    if redirect is not None and len(targets) != 1:
        raise ObliviateError("--redirect works with one --concept")
    sched = pipe.scheduler
    alphas = sched.alphas_cumprod
    with ExitStack() as stack:
        jobs = [_prepare(model, t, cfg, stack) for t in targets]
        bank = _redirect_bank(model, jobs[0], redirect, cfg, gen) if redirect else None
        keep = _preserve_bank(model, targets + ([redirect] if redirect else []), cfg)
        frozen = copy.deepcopy(unet).requires_grad_(False) if keep is not None else None
        params = stack.enter_context(editing(model, cfg.trainable, cfg.rank))
        capture = Capture()
        stack.enter_context(attn2_processors(unet, Attn2Processor(capture)))
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        for step in tqdm(range(cfg.steps), desc=f"fmn {', '.join(concepts)}", disable=not cfg.progress):
            job = jobs[step % len(jobs)]
            idx = torch.randint(len(job.latents), (cfg.batch_size,), generator=gen)
            z0 = job.latents[idx]
            noise = torch.randn(z0.shape, generator=gen)
            t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
            a = alphas[t].view(-1, 1, 1, 1)
            zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
            capture.reset(job.mask.expand(len(idx), -1))
            unet(zt, t, job.cond.expand(len(idx), -1, -1))
            loss = capture.collected().norm()
            if bank is not None:
                capture.reset(None)
                j = torch.randint(len(bank[0]), (cfg.batch_size,), generator=gen)
                pred = unet(bank[0][j], bank[1][j], job.cond.expand(len(j), -1, -1)).sample
                loss = loss + cfg.redirect_weight * F.mse_loss(pred, bank[2][j])
            if keep is not None:
                capture.reset(None)
                j = torch.randint(len(keep.cond), (cfg.batch_size,), generator=gen)
                zk = zt
                if keep.latents is not None:
                    zk = a.sqrt() * keep.latents[j] + (1 - a).sqrt() * torch.randn(zt.shape, generator=gen)
                with torch.no_grad():
                    goal = frozen(zk, t, keep.cond[j]).sample
                loss = loss + cfg.preserve_weight * F.mse_loss(unet(zk, t, keep.cond[j]).sample, goal)
            if not torch.isfinite(loss):
                raise ObliviateError(f"loss became {loss.item()} at step {step}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        meta = {"method": "fmn", "concepts": [t.name for t in targets], "config": config_dict(cfg),
                "seconds": round(time.time() - start, 2)}
        return take_patch(model, cfg.trainable, meta)
