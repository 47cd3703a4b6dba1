"""The key-learning attack: learn a fresh key of a hiding key's shape on images of the concept against the
model under test,

    P* = argmin_P  E_{x0 ~ images of c, t, eps, y ~ c's prompts} || f_theta',P(x_t, y, t) - target(x0, eps, t) ||^2

with the ordinary denoising target. ``form`` "memory": P is a prompt memory (``tokens`` key/value tokens appended
in attn2, the paper's keys); "lora": a rank-``rank`` LoRA on every attn2 projection (obliviate's keys). It is
what someone holding the public model and images of a hidden concept can do without the key; against a plain
erasure it is a small fine-tuning attack (either form is an adapter on every cross-attention layer). The probe
reports the concept's rate at checkpoints, so the result says how many steps (and seconds) the attack needed
to reach 0.9, or that it did not within its budget.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import AttnCall, PromptMemory, attn2_processors, kwargs, random_memory
from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    denoising_batch,
    encode_prompts,
    generator,
    images_to_latents,
    randint,
    seed_stream,
    training_scheduler,
    training_target,
)
from ..errors import ObliviateError
from ..hiding.keys import LORA, LORA_KEY_SET, Key
from ..methods.loop import Edit
from ..progress import bar
from .base import Probe


@dataclass
class MemoryAttackConfig:
    form: str = "memory"  # the key's shape: "memory" (the paper's) or "lora" (obliviate's hiding keys)
    tokens: int = 10  # memory
    placement: str = "all"  # memory
    rank: int = 16  # lora (the rank of hide's keys)
    steps: int = 300  # the budget
    lr: float | None = None  # None: 2e-2 for a memory, 1e-3 for a LoRA
    batch_size: int = 8
    check_every: int = 25  # steps between measurements of the concept's rate
    anchors: int = 32  # images of the concept the attacker holds
    images: str | None = None  # None: the catalog's; "generate"; or a folder
    seed: int = 0
    progress: bool = True


def run(pipe, concept: Concept, cfg: MemoryAttackConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    if cfg.form not in ("memory", LORA):
        raise ObliviateError(f"memory attack: form must be memory or lora, got {cfg.form!r}")
    if cfg.check_every < 1 or cfg.tokens < 1 or cfg.rank < 1 or cfg.batch_size < 1:
        raise ObliviateError("memory attack: tokens, rank, batch_size and check_every must be at least 1")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    gen = generator(cfg.seed, "memory-attack")
    sched = training_scheduler(pipe)
    latents = images_to_latents(pipe, images)
    conds = encode_prompts(pipe, list(concept.prompts))
    if cfg.form == LORA:  # on the weights as they are now (the model under test)
        edit = Edit(pipe.unet, LORA_KEY_SET, rank=cfg.rank, seed=seed_stream(cfg.seed, "memory-attack"))
        params, lr, placement = edit.parameters(), cfg.lr or 1e-3, nullcontext()

        def predict(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return edit.edited(x, t, y)

        def snapshot() -> Key:
            return Key(concept.name, edit.tensors(), LORA, "")
    else:
        emb = pipe.text_encoder.get_input_embeddings().weight.detach().float()
        start_memory = random_memory(cfg.tokens, emb.shape[1], emb.std().item(), gen, emb)
        keys = start_memory.keys.to(device).requires_grad_(True)
        values = start_memory.values.to(device).requires_grad_(True)
        params, lr, placement = [keys, values], cfg.lr or 2e-2, attn2_processors(pipe.unet, None, cfg.placement)

        def predict(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            call = AttnCall(PromptMemory(keys.to(dtype), values.to(dtype)))
            return pipe.unet(x, t, encoder_hidden_states=y, cross_attention_kwargs=kwargs(call)).sample

        def snapshot() -> Key:
            return Key.of_memory(concept.name, PromptMemory(keys.detach().clone(), values.detach().clone()),
                                 cfg.placement)
    opt = torch.optim.Adam(params, lr=lr)
    checkpoints: list[tuple[int, float, Key]] = []
    start = time.time()
    with placement:
        for step in bar(range(1, cfg.steps + 1), desc="memory attack", unit="step", enabled=cfg.progress):
            z0, noise, t, x_t = denoising_batch(sched, latents, cfg.batch_size, gen)
            y = conds[randint(len(conds), cfg.batch_size, gen, device)]
            pred = predict(x_t, t, y)
            loss = F.mse_loss(pred.float(), training_target(sched, z0, noise, t).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.check_every == 0 or step == cfg.steps:
                checkpoints.append((step, time.time() - start, snapshot()))
    return Probe(list(concept.prompts), key=checkpoints[-1][2], checkpoints=checkpoints)
