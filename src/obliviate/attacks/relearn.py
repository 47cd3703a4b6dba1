"""The relearning attack: fine-tune the model under test on N images of the concept,

    phi* = argmin_phi E_{x0 ~ images of c, t, eps, y ~ c's prompts} ||f_{theta+phi}(x_t, y, t) - target(x0, eps, t)||^2

with the ordinary denoising target, and count the steps (and seconds) until the detector finds the concept in
``REACHED`` of the images. ``form`` is what phi is: "lora", a rank-``rank`` LoRA on every attn2 projection (the
shape of obliviate's hiding keys); "cross-attention", every attn2 weight itself (full cross-attention
fine-tuning); "memory", a prompt memory of ``tokens`` key/value tokens appended in attn2 (the paper's keys).
The key-learning attack on hiding is this attack in a key's shape (:class:`.configs.MemoryAttackConfig`).

Against a model that never learned the concept (the oracle) relearning teaches; against an erasure it also
recovers what the edit left: the steps each one needs, side by side, tell the two apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from ..attention import AttnCall, PromptMemory, random_memory
from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, images_to_latents, randint, seed_stream, training_scheduler
from ..families import attention, encode, predict, text_width, token_embeddings
from ..hiding.keys import LORA_KEY_SET, Key
from ..methods.loop import Edit
from ..patch import Patch
from ..progress import bar
from ..terms import denoising_loss
from .base import Probe
from .configs import MemoryAttackConfig, RelearnConfig

__all__ = ["MemoryAttackConfig", "RelearnConfig", "run"]

LEARNING_RATES = {"lora": 1e-3, "cross-attention": 1e-4, "memory": 2e-2}
TRAINABLE = {"lora": LORA_KEY_SET, "cross-attention": "attn2"}


def run(pipe, concept: Concept, cfg: RelearnConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    gen = generator(cfg.seed, "memory-attack")  # one stream for every form (and the key-learning attack's figures)
    sched = training_scheduler(pipe)
    latents = images_to_latents(pipe, images)
    conds = encode(pipe, list(concept.prompts))
    device, dtype = latents.device, latents.dtype
    lr = cfg.lr or LEARNING_RATES[cfg.form]
    if cfg.form == "memory":
        learned, params, snapshot, placement = _memory(pipe, concept, cfg, gen, device, dtype)
    else:  # on the weights as they are now (the model under test)
        edit = Edit(pipe, TRAINABLE[cfg.form], rank=cfg.rank, seed=seed_stream(cfg.seed, "memory-attack"))
        learned, params, placement = edit.edited, edit.parameters(), nullcontext()

        def snapshot() -> Patch:
            return Patch(edit.tensors(), {"method": f"relearn ({cfg.form})", "concepts": [concept.name]})
    opt = torch.optim.Adam(params, lr=lr)
    checkpoints: list[tuple[int, float, Key | Patch]] = []
    start = time.time()
    with placement:
        for step in bar(range(1, cfg.steps + 1), desc=f"relearn ({cfg.form})", unit="step", enabled=cfg.progress):
            loss = denoising_loss(sched, latents, cfg.batch_size, gen, lambda x_t, t: learned(
                x_t, t, conds[randint(len(conds), cfg.batch_size, gen, device)]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.check_every == 0 or step == cfg.steps:
                checkpoints.append((step, time.time() - start, snapshot()))
    return Probe(list(concept.prompts), key=checkpoints[-1][2], checkpoints=checkpoints)


def _memory(pipe, concept: Concept, cfg: RelearnConfig, gen: torch.Generator, device, dtype) \
        -> tuple[Callable, list[torch.Tensor], Callable[[], Key], object]:
    """A fresh prompt memory: its forward, its tensors, its snapshot as a key, and its placement in attn2."""
    emb = token_embeddings(pipe)
    start = random_memory(cfg.tokens, text_width(pipe), emb.std().item(), gen, emb)
    keys = start.keys.to(device).requires_grad_(True)
    values = start.values.to(device).requires_grad_(True)

    def learned(x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        return predict(pipe, x, t, y, attention=AttnCall(PromptMemory(keys.to(dtype), values.to(dtype))))

    def snapshot() -> Key:
        return Key.of_memory(concept.name, PromptMemory(keys.detach().clone(), values.detach().clone()),
                             cfg.placement)

    return learned, [keys, values], snapshot, attention(pipe, None, cfg.placement)
