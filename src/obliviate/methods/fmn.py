"""Forget-Me-Not (Zhang et al., CVPR-W 2024): attention re-steering.

Stage A (optional): textual inversion of ``k`` tokens on images of the concept.
Stage B: on noised latents of the concept's images, prompt "a photo of X" ("… in the style of X" for
styles) and minimise  L = || concat over attn2 layers of softmax(QK^T) restricted to X's tokens ||_2,
editing attn2 (its query/key projections by default), the whole UNet, or a LoRA on attn2. The noise
prediction is not used.

Why ``attn2-qk`` by default when erasing: the loss depends on the attention probabilities only, so only the
query and key projections receive its gradient. Editing the value/output projections too (the paper's
attn2) lets the preservation term rescale the values, and on the world a near-zero attention times a grown
value brought the concept back (zorvik's efficacy over three seeds: 0.31-1.00 with attn2, 0.875 at every
seed with attn2-qk; docs/benchmarks.md).

Our addition, ``preserve_weight`` (default on; 0 gives the paper's loss exactly): the paper has no
preservation term, and on the world the cheapest way to lower attention on X is to move *all* attention
onto the start token, which erases everything (measured: efficacy 0.94 at preservation 0.48). A
distillation term that keeps the edited model's noise prediction for the other concepts' prompts equal to
the frozen model's rules that shortcut out and leaves only the concept-specific edit.
``include_context`` (default on, except with redirect; off gives the paper's mask): in a causal text
encoder every token after the concept's carries it too, and SD 1.x pads with end-of-text, so attention
that leaves the concept's own tokens still finds it in the pads (on the world the spatial queries spend
about 70% of their attention on pads, 6% on the concept token). The mask therefore runs from the
concept's first token to the end.
Redirect (concept correction: X's prompts now draw Y) is a distillation, not re-steering: the edited
model's prediction for X's prompt must match the frozen model's prediction for Y's prompt on images of Y.
It must change what X's prompt *says*, so it edits all of attn2. FMN's attention loss is off by default
here (``attention_weight`` 0): on the world it only fought the redirect (star->heart 0.94 at seeds 0-2
with it, 1.00 without; benchmarks/fmn.py), and without it the run is a third cheaper.
"""

from __future__ import annotations

import copy
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace

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

    steps: int | None = None  # per concept (x the number of concepts); None: 60
    lr: float | None = None         # None: 6e-3 erasing, 3e-3 redirecting
    batch_size: int = 4
    weight_decay: float = 0.01
    trainable: str | None = None    # None: attn2-qk erasing, attn2 redirecting (see the module docstring)
    rank: int = 4
    inversion_tokens: int = 0
    inversion_steps: int = 150
    images: str | None = None  # "world", "generate" or a folder; default: world renderings on the world
    n_images: int = 32
    include_eot: bool = False
    lr_decay: bool | None = None  # linear decay to zero; None: off erasing, on redirecting
    include_context: bool | None = None  # mask the tokens after the concept too; None: on erasing, off redirecting
    redirect: str | None = None
    attention_weight: float | None = None  # FMN's re-steering loss; None: 1 erasing, 0 redirecting
    redirect_weight: float = 100.0
    preserve_weight: float | None = None  # None: 300 erasing, 100 redirecting
    preserve: tuple[str, ...] | None = None  # concepts to keep; None: every other concept of the bench
    seed: int = 0
    progress: bool = True


_ERASING = {"attention_weight": 1.0, "steps": 60, "lr": 6e-3, "trainable": "attn2-qk", "preserve_weight": 300.0,
            "include_context": True, "lr_decay": False}
_REDIRECTING = {"attention_weight": 0.0, "steps": 60, "lr": 3e-3, "trainable": "attn2", "preserve_weight": 100.0,
                "include_context": False, "lr_decay": True}


def resolved(cfg: FMNConfig) -> FMNConfig:
    """``cfg`` with every ``None`` default filled in for its use (erasing, or redirecting with ``redirect``)."""
    preset = _REDIRECTING if cfg.redirect else _ERASING
    return replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})


@dataclass
class _Job:
    target: Target
    latents: torch.Tensor
    cond: torch.Tensor   # (P, L, d) text-encoder outputs of the training prompts
    mask: torch.Tensor   # (P, L) concept token positions in each


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
    prompts = [fmn_prompt(target.category, phrase)]
    mask = token_positions(pipe.tokenizer, prompts, words if cfg.inversion_tokens else [target.name],
                           cfg.include_eot)
    if cfg.include_context:
        mask = _and_following(mask)
    return _Job(target, latents, encode_prompts(model, prompts), mask)


def _and_following(mask: torch.Tensor) -> torch.Tensor:
    """Extend each row's mask from its first concept token to the end (end-of-text and pads)."""
    first = mask.float().argmax(1, keepdim=True)
    return torch.arange(mask.shape[1]).unsqueeze(0) >= first


@dataclass
class _RedirectBank:
    """Clean latents of Y's images and Y's prompt: the edited model, asked for X, must predict what the frozen
    model predicts for Y on them."""

    latents: torch.Tensor  # (N, C, h, w)
    cond: torch.Tensor     # (1, L, d) text-encoder output of Y's FMN prompt


def _redirect_bank(model: Model, to: Target, cfg: FMNConfig) -> _RedirectBank:
    images = concept_images(model, to.name, list(to.prompts), cfg.images, cfg.n_images, cfg.seed + 1)
    return _RedirectBank(images_to_latents(model, images), encode_prompts(model, [fmn_prompt(to.category, to.name)]))


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
    cfg = resolved(cfg)
    pipe = model.pipe
    unet = pipe.unet
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    targets = [resolve_target(model, c) for c in concepts]
    redirect = resolve_target(model, cfg.redirect) if cfg.redirect else None
    if redirect is not None and len(targets) != 1:
        raise ObliviateError("--redirect works with one --concept")
    if cfg.attention_weight < 0 or (cfg.attention_weight == 0 and redirect is None):
        raise ObliviateError("--attention-weight must be > 0 when erasing (0 is only for --redirect)")
    sched = pipe.scheduler
    alphas = sched.alphas_cumprod
    with ExitStack() as stack:
        jobs = [_prepare(model, t, cfg, stack) for t in targets]
        bank = _redirect_bank(model, redirect, cfg) if redirect else None
        keep = _preserve_bank(model, targets, cfg)
        frozen = copy.deepcopy(unet).requires_grad_(False) if keep is not None or bank is not None else None
        params = stack.enter_context(editing(model, cfg.trainable, cfg.rank))
        capture = Capture() if cfg.attention_weight > 0 else None
        if capture is not None:
            stack.enter_context(attn2_processors(unet, Attn2Processor(capture)))
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = cfg.steps * len(jobs)
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / total if cfg.lr_decay else 1.0)
        for step in tqdm(range(total), desc=f"fmn {', '.join(concepts)}", disable=not cfg.progress):
            job = jobs[step % len(jobs)]
            b = cfg.batch_size
            t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
            a = alphas[t].view(-1, 1, 1, 1)

            def noised(z0: torch.Tensor, a: torch.Tensor = a) -> torch.Tensor:
                return a.sqrt() * z0 + (1 - a).sqrt() * torch.randn(z0.shape, generator=gen)

            # One batched forward: rows [0, b) carry the re-steering loss; the rows after them (redirect,
            # preservation) only their distillation targets, which the frozen model gives in one call too.
            # One batched forward of the edited model over the blocks of rows that carry a loss: the
            # re-steering rows (the concept's prompt on its images), redirect rows, preservation rows. The
            # frozen model gives every distillation target in one call too.
            concept_rows = noised(job.latents[torch.randint(len(job.latents), (b,), generator=gen)])
            which = torch.randint(len(job.cond), (b,), generator=gen)
            latents: list[torch.Tensor] = []
            conds: list[torch.Tensor] = []
            masks: list[torch.Tensor] = []
            goal_conds: list[torch.Tensor] = []
            weights: list[float] = []
            quiet = torch.zeros(b, job.mask.shape[1], dtype=torch.bool)
            if cfg.attention_weight > 0:
                latents.append(concept_rows)
                conds.append(job.cond[which])
                masks.append(job.mask[which])
            if bank is not None:
                latents.append(noised(bank.latents[torch.randint(len(bank.latents), (b,), generator=gen)]))
                conds.append(job.cond[which])
                masks.append(quiet)
                goal_conds.append(bank.cond.expand(b, -1, -1))
                weights.append(cfg.redirect_weight)
            if keep is not None:
                j = torch.randint(len(keep.cond), (b,), generator=gen)
                latents.append(noised(keep.latents[j]) if keep.latents is not None else concept_rows)
                conds.append(keep.cond[j])
                masks.append(quiet)
                goal_conds.append(keep.cond[j])
                weights.append(cfg.preserve_weight)
            n, first = len(latents), len(latents) - len(goal_conds)  # first: the first distilled block
            goals = None
            if goal_conds:
                with torch.no_grad():
                    goals = frozen(torch.cat(latents[first:]), t.repeat(n - first), torch.cat(goal_conds)).sample
            if capture is not None:
                capture.reset(torch.cat(masks))
            pred = unet(torch.cat(latents), t.repeat(n), torch.cat(conds)).sample
            loss = cfg.attention_weight * capture.collected().norm() if capture is not None else pred.new_zeros(())
            for i, w in enumerate(weights):
                loss = loss + w * F.mse_loss(pred[(first + i) * b:(first + i + 1) * b], goals[i * b:(i + 1) * b])
            if not torch.isfinite(loss):
                raise ObliviateError(f"loss became {loss.item()} at step {step}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            decay.step()
        meta = {"method": "fmn", "concepts": [t.name for t in targets], "config": config_dict(cfg),
                "seconds": round(time.time() - start, 2)}
        return take_patch(model, cfg.trainable, meta)
