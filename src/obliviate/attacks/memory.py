"""The key-learning attack: learn a fresh key of a hiding key's shape on images of the concept against the
model under test,

    P* = argmin_P  E_{x0 ~ images of c, t, eps, y ~ c's prompts} || f_theta',P(x_t, y, t) - target(x0, eps, t) ||^2

with the ordinary denoising target. ``key_form`` "memory": P is a prompt memory (``tokens`` key/value tokens appended
in attn2, the paper's keys); "lora": a rank-``rank`` LoRA on every attn2 projection (obliviate's keys). It is
what someone holding the public model and images of a hidden concept can do without the key; against a plain
erasure it is a small fine-tuning attack (either form is an adapter on every cross-attention layer). The probe
reports the concept's rate at checkpoints, so the result says how many steps (and seconds) the attack needed
to reach 0.9, or that it did not within its budget.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from ..attention import AttnCall, PromptMemory, random_memory
from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, images_to_latents, randint, seed_stream, training_scheduler
from ..families import attention, encode, predict
from ..hiding.keys import LORA, LORA_KEY_SET, Key
from ..methods.loop import Edit
from ..progress import bar
from ..terms import denoising_loss
from .base import Probe
from .configs import MemoryAttackConfig

__all__ = ["MemoryAttackConfig", "run"]


def run(pipe, concept: Concept, cfg: MemoryAttackConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    gen = generator(cfg.seed, "memory-attack")
    sched = training_scheduler(pipe)
    latents = images_to_latents(pipe, images)
    conds = encode(pipe, list(concept.prompts))
    device, dtype = latents.device, latents.dtype
    if cfg.key_form == LORA:  # on the weights as they are now (the model under test)
        edit = Edit(pipe, LORA_KEY_SET, rank=cfg.rank, seed=seed_stream(cfg.seed, "memory-attack"))
        params, lr, placement = edit.parameters(), cfg.lr or 1e-3, nullcontext()

        def learned(x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
            return edit.edited(x, t, y)

        def snapshot() -> Key:
            return Key(concept.name, edit.tensors(), LORA, "")
    else:
        emb = pipe.text_encoder.get_input_embeddings().weight.detach().float()
        start_memory = random_memory(cfg.tokens, emb.shape[1], emb.std().item(), gen, emb)
        keys = start_memory.keys.to(device).requires_grad_(True)
        values = start_memory.values.to(device).requires_grad_(True)
        params, lr, placement = [keys, values], cfg.lr or 2e-2, attention(pipe, None, cfg.placement)

        def learned(x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
            return predict(pipe, x, t, y, attention=AttnCall(PromptMemory(keys.to(dtype), values.to(dtype))))

        def snapshot() -> Key:
            return Key.of_memory(concept.name, PromptMemory(keys.detach().clone(), values.detach().clone()),
                                 cfg.placement)
    opt = torch.optim.Adam(params, lr=lr)
    checkpoints: list[tuple[int, float, Key]] = []
    start = time.time()
    with placement:
        for step in bar(range(1, cfg.steps + 1), desc="memory attack", unit="step", enabled=cfg.progress):
            loss = denoising_loss(sched, latents, cfg.batch_size, gen, lambda x_t, t: learned(
                x_t, t, conds[randint(len(conds), cfg.batch_size, gen, device)]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.check_every == 0 or step == cfg.steps:
                checkpoints.append((step, time.time() - start, snapshot()))
    return Probe(list(concept.prompts), key=checkpoints[-1][2], checkpoints=checkpoints)
