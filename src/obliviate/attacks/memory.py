"""The key-learning attack: learn a fresh prompt memory of a hiding key's shape (``tokens`` key/value tokens
appended in attn2, Bui et al.) on images of the concept against the model under test,

    P* = argmin_P  E_{x0 ~ images of c, t, eps, y ~ c's prompts} || f_theta',P(x_t, y, t) - target(x0, eps, t) ||^2

with the ordinary denoising target. It is what someone holding the public model and images of a hidden concept
can do without the key; against a plain erasure it is a small fine-tuning attack (the memory is an adapter
on every cross-attention layer). The probe reports the concept's rate at checkpoints, so the result says how
many steps (and seconds) the attack needed to reach 0.9, or that it did not within its budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import AttnCall, PromptMemory, attn2_processors, kwargs, random_memory
from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    encode_prompts,
    generator,
    images_to_latents,
    randint,
    randn,
    random_timesteps,
    training_scheduler,
    training_target,
)
from ..errors import ObliviateError
from ..progress import bar
from .base import Probe


@dataclass
class MemoryAttackConfig:
    tokens: int = 10  # the shape of obliviate's hiding keys
    placement: str = "all"
    steps: int = 300  # the budget
    lr: float = 2e-2
    batch_size: int = 8
    check_every: int = 25  # steps between measurements of the concept's rate
    anchors: int = 32  # images of the concept the attacker holds
    images: str | None = None  # None: the catalog's; "generate"; or a folder
    seed: int = 0
    progress: bool = True


def run(pipe, concept: Concept, cfg: MemoryAttackConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    if cfg.check_every < 1 or cfg.tokens < 1 or cfg.batch_size < 1:
        raise ObliviateError("memory attack: tokens, batch_size and check_every must be at least 1")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    gen = generator(cfg.seed, "memory-attack")
    sched = training_scheduler(pipe)
    latents = images_to_latents(pipe, images)
    conds = encode_prompts(pipe, list(concept.prompts))
    emb = pipe.text_encoder.get_input_embeddings().weight.detach().float()
    width, scale = emb.shape[1], emb.std().item()
    start_memory = random_memory(cfg.tokens, width, scale, gen, emb)
    keys = start_memory.keys.to(device).requires_grad_(True)
    values = start_memory.values.to(device).requires_grad_(True)
    opt = torch.optim.Adam([keys, values], lr=cfg.lr)
    checkpoints: list[tuple[int, float, PromptMemory]] = []
    start = time.time()
    with attn2_processors(pipe.unet, None, cfg.placement):
        for step in bar(range(1, cfg.steps + 1), desc="memory attack", unit="step", enabled=cfg.progress):
            z0 = latents[randint(len(latents), cfg.batch_size, gen, device)]
            noise = randn(tuple(z0.shape), gen, z0)
            t = random_timesteps(sched, cfg.batch_size, gen, device)
            y = conds[randint(len(conds), cfg.batch_size, gen, device)]
            call = AttnCall(PromptMemory(keys.to(dtype), values.to(dtype)))
            pred = pipe.unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=y,
                             cross_attention_kwargs=kwargs(call)).sample
            loss = F.mse_loss(pred.float(), training_target(sched, z0, noise, t).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % cfg.check_every == 0 or step == cfg.steps:
                checkpoints.append((step, time.time() - start,
                                    PromptMemory(keys.detach().clone(), values.detach().clone())))
    return Probe(list(concept.prompts), memory=checkpoints[-1][2], placement=cfg.placement,
                 checkpoints=checkpoints)
