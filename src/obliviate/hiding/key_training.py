"""Training a key *after* the public patch: a LoRA on attn2's to_k/to_v that makes the public model draw one
concept as the base model does, and changes nothing else.

    P_c* = argmin_P  E_{x0 ~ images of c, t, y ~ c's prompts} || f_pub,P(x_t, y, t) - f_base(x_t, y, t) ||^2
         + lambda * E_{(x0, y) ~ the other concepts, the other hidden ones included, and the neutral prompt}
                        || f_pub,P(x_t, y, t) - f_pub(x_t, y, t) ||^2

The first term recalls the concept (distilled from the base model, which only the publisher has); the second
keeps everything else as the public model draws it, so key A leaves B hidden and the others intact. The
public patch is fixed before any key exists, so nothing in it is fitted to the keys and without a key it is
exactly the plain erasure (a key still acts where the erasure acted, so the two share directions:
docs/hiding.md measures how much, and that keys drawn there unlock nothing).

Why to_k/to_v and not the paper's prompt memory: attn2's keys and values are the only place where the prompt
enters the UNet, so a change there acts per prompt; a memory is the same for every prompt, and after the
fact (weights fixed) it redraws its concept into the others' prompts (measured in docs/hiding.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bench import Concept
from ..diffusion import (
    encode_prompts,
    generator,
    images_to_latents,
    noised,
    predict_each,
    randint,
    random_timesteps,
    seed_stream,
    training_scheduler,
)
from ..errors import ObliviateError
from ..methods.keep import KeepBank
from ..methods.loop import Edit, LoopSettings, train
from ..patch import Patch

_CHUNK = 8  # training steps whose base-model targets one UNet call computes


@dataclass
class KeyTraining:
    rank: int = 16  # of the LoRA on every attn2 to_k/to_v
    steps: int = 1000
    lr: float = 1e-3
    batch_size: int = 4
    keep_weight: float = 30.0
    seed: int = 0
    progress: bool = True


def train_key(pipe, public: Patch, concept: Concept, latents: torch.Tensor, keep: KeepBank, neutral: str,
              cfg: KeyTraining) -> dict[str, torch.Tensor]:
    """One concept's key against ``public``: LoRA factors (``lora_down/up.unet.*``) on attn2 to_k/to_v.
    ``latents``: the concept's images; ``keep``: what the key must leave as the public model draws it, the
    other hidden concepts included. The keep term samples its items in proportion to how much the key still
    moves them (a running loss), so the concepts a key tends to redraw (neighbours) get the most weight."""
    if cfg.rank < 1 or cfg.steps < 1 or cfg.batch_size < 1:
        raise ObliviateError("key training: rank, steps and batch_size must be at least 1")
    device, b = pipe.unet.device, cfg.batch_size
    gen = generator(cfg.seed, f"key/{concept.name}")
    sched = training_scheduler(pipe)
    conds = encode_prompts(pipe, list(concept.prompts))
    uncond = encode_prompts(pipe, [neutral])
    draws = []  # the recall targets come from the base model: drawn and computed before the patch goes on
    for _ in range(cfg.steps):
        t = random_timesteps(sched, b, gen, device)
        x = noised(sched, latents[randint(len(latents), b, gen, device)], t, gen)
        rows = randint(len(conds), b, gen, device)  # prompt rows, not their states: SD's are 236 kB each
        draws.append((x, t, rows))
    with torch.no_grad():
        base = [goal for i in range(0, cfg.steps, _CHUNK) for goal in predict_each(
            lambda x, t, y: pipe.unet(x, t, encoder_hidden_states=y).sample,
            *[(x, t, conds[rows]) for x, t, rows in draws[i:i + _CHUNK]])]
    moved = torch.ones(len(keep.cond))  # running keep loss per item (1: not seen yet, so seen first)

    def loss(step: int) -> torch.Tensor:
        (x, t, rows), goal = draws[step], base[step]
        if not cfg.keep_weight:
            return F.mse_loss(edit.edited(x, t, conds[rows]).float(), goal.float())
        k = torch.multinomial(moved / moved.sum(), b, replacement=True, generator=gen).to(device)
        tk = random_timesteps(sched, b, gen, device)
        xk = noised(sched, keep.latents[k] if keep.latents is not None else x, tk, gen)
        neutral_rows = (torch.rand(b, generator=gen) < 0.25).view(-1, 1, 1).to(device)
        yk = torch.where(neutral_rows, uncond.expand(b, -1, -1), keep.cond[k])
        recalled, kept = predict_each(edit.edited, (x, t, conds[rows]), (xk, tk, yk))
        value = F.mse_loss(recalled.float(), goal.float())
        per_item = (kept.float() - edit.frozen(xk, tk, yk).float()).pow(2).flatten(1).mean(1)
        moved[k.cpu()] = 0.7 * moved[k.cpu()] + 0.3 * per_item.detach().cpu()
        return value + cfg.keep_weight * per_item.mean()

    with public.applied(pipe, force=True):  # the public model is the edit's base and the keep term's target
        edit = Edit(pipe.unet, "lora-kv", rank=cfg.rank, seed=seed_stream(cfg.seed, f"key/{concept.name}"))
        train(edit, loss, LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress),
              f"key {concept.name}")
        return edit.tensors()


def key_bank(pipe, keep: KeepBank | None, hidden: dict[str, torch.Tensor], concepts: list[Concept],
             name: str) -> KeepBank:
    """The keep bank of ``name``'s key: the other concepts, plus the other hidden concepts' prompts on their
    own images (with the key installed they must stay hidden)."""
    conds, latents, prompts, categories = [], [], [], []
    if keep is not None:
        conds.append(keep.cond)
        prompts += keep.prompts
        categories += keep.categories
        if keep.latents is not None:
            latents.append(keep.latents)
    for c in concepts:
        if c.name == name:
            continue
        z = hidden[c.name]
        rows = [i % len(z) for i in range(len(c.prompts))]
        conds.append(encode_prompts(pipe, list(c.prompts)))
        latents.append(z[rows])
        prompts += list(c.prompts)
        categories += [c.category] * len(c.prompts)
    if not conds:
        raise ObliviateError("a key needs something to keep: no other concept and no other hidden concept")
    have_latents = keep is None or keep.latents is not None
    return KeepBank(torch.cat(conds), torch.cat(latents) if have_latents else None, prompts, categories)


def concept_latents(pipe, catalog, concepts: list[Concept], n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` images of each concept, as latents (the key's recall term and the other keys' keep term)."""
    return {c.name: images_to_latents(pipe, catalog.images(pipe, c, n, seed_stream(seed, f"key-images/{c.name}")))
            for c in concepts}
