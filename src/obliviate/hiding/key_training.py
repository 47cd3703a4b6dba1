"""Training a key *after* the public patch: a LoRA on every attn2 projection that makes the public model draw one
concept as the base model does, and changes nothing else.

    P_c* = argmin_P  E_{x0 ~ images of c, t, y ~ c's prompts or the neutral prompt}
                        || f_pub,P(x_t, y, t) - f_base(x_t, y, t) ||^2
         + lambda * E_{(x0, y) ~ the other concepts, the other hidden ones included, and the neutral prompt}
                        || f_pub,P(x_t, y, t) - f_pub(x_t, y, t) ||^2

The first term recalls the concept (distilled from the base model, which only the publisher has), under its
prompts and, in a share of the rows, under the neutral prompt: a sampler's unconditional branch runs the same
key, and where the erasure taught that branch to steer the concept's images away, a key that restores only the
prompt's prediction leaves guidance pulling against it (measured in docs/hiding.md). The second
keeps everything else as the public model draws it, so key A leaves B hidden and the others intact. The
public patch is fixed before any key exists, so nothing in it is fitted to the keys and without a key it is
exactly the plain erasure (a key still acts where the erasure acted, so the two share directions:
docs/hiding.md measures how much, and that keys drawn there unlock nothing).

Why a LoRA and not the paper's prompt memory: a memory is the same for every prompt, and after the fact
(weights fixed) it redraws its concept into the others' prompts (measured in docs/hiding.md). Why all four
projections and not only to_k/to_v, where the prompt enters: a robust erasure removes the concept from the
denoiser, not only from its prompt path, and a key confined to that path fell short of recall on the more
thorough erasures while the keep term held; to_q and to_out reach back into the image path, and the keep
term, not the placement, is what keeps the key to its concept (docs/hiding.md).
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..diffusion import (
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
from ..families import Conditioning, encode, predict
from ..methods.loop import Edit, LoopSettings, train
from ..patch import Patch
from ..terms import KeepBank, distance, keep_rows
from .config import KeyTraining
from .keys import LORA_KEY_SET

__all__ = ["KeyTraining", "concept_latents", "key_bank", "train_key"]
_CHUNK = 8  # training steps whose base-model targets one denoiser call computes


def train_key(pipe, public: Patch, concept: Concept, latents: torch.Tensor, keep: KeepBank, neutral: str,
              cfg: KeyTraining) -> dict[str, torch.Tensor]:
    """One concept's key against ``public``: LoRA factors (``lora_down/up.unet.*``) on attn2.
    ``latents``: the concept's images; ``keep``: what the key must leave as the public model draws it, the
    other hidden concepts included. The keep term samples its items in proportion to how much the key still
    moves them (a running loss), so the concepts a key tends to redraw (neighbours) get the most weight."""
    device, b = latents.device, cfg.batch_size
    gen = generator(cfg.seed, f"key/{concept.name}")
    sched = training_scheduler(pipe)
    uncond = encode(pipe, [neutral])
    conds = Conditioning.cat([encode(pipe, list(concept.prompts)), uncond])
    neutral_row = len(conds) - 1
    draws = []  # the recall targets come from the base model: drawn and computed before the patch goes on
    for _ in range(cfg.steps):
        t = random_timesteps(sched, b, gen, device)
        x = noised(sched, latents[randint(len(latents), b, gen, device)], t, gen)
        rows = randint(neutral_row, b, gen, device)  # prompt rows, not their states: SD's are 236 kB each
        rows = torch.where(torch.rand(b, generator=gen).to(device) < cfg.neutral_recall, neutral_row, rows)
        draws.append((x, t, rows))
    with torch.no_grad():
        base = [goal for i in range(0, cfg.steps, _CHUNK) for goal in predict_each(
            lambda x, t, y: predict(pipe, x, t, y), *[(x, t, conds[rows]) for x, t, rows in draws[i:i + _CHUNK]])]
    moved = torch.ones(len(keep.cond))  # running keep loss per item (1: not seen yet, so seen first)

    def loss(step: int) -> torch.Tensor:
        (x, t, rows), goal = draws[step], base[step]
        if not cfg.keep_weight:
            return distance(edit.edited(x, t, conds[rows]), goal)
        k = torch.multinomial(moved / moved.sum(), b, replacement=True, generator=gen).to(device)
        kept = keep_rows(keep, sched, b, gen, k=k)
        yk = Conditioning.where(torch.rand(b, generator=gen) < 0.25, uncond.expand(b), kept.cond)
        recalled, retained = predict_each(edit.edited, (x, t, conds[rows]), (kept.x, kept.t, yk))
        value = distance(recalled, goal)
        per_item = (retained.float() - edit.frozen(kept.x, kept.t, yk).float()).pow(2).flatten(1).mean(1)
        moved[k.cpu()] = 0.7 * moved[k.cpu()] + 0.3 * per_item.detach().cpu()
        return value + cfg.keep_weight * per_item.mean()

    with public.applied(pipe, force=True):  # the public model is the edit's base and the keep term's target
        edit = Edit(pipe, LORA_KEY_SET, rank=cfg.rank, seed=seed_stream(cfg.seed, f"key/{concept.name}"))
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
        latents.append(keep.latents)
        prompts += keep.prompts
        categories += keep.categories
    for c in concepts:
        if c.name == name:
            continue
        z = hidden[c.name]
        conds.append(encode(pipe, list(c.prompts)))
        latents.append(z[[i % len(z) for i in range(len(c.prompts))]])
        prompts += list(c.prompts)
        categories += [c.category] * len(c.prompts)
    if not conds:
        raise ObliviateError("a key needs something to keep: no other concept and no other hidden concept")
    return KeepBank(Conditioning.cat(conds), torch.cat(latents), prompts, categories)


def concept_latents(pipe, catalog, concepts: list[Concept], n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` images of each concept, as latents (the key's recall term and the other keys' keep term)."""
    return {c.name: images_to_latents(pipe, catalog.images(pipe, c, n, seed_stream(seed, f"key-images/{c.name}")))
            for c in concepts}
