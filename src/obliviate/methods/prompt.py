"""Learnable-prompt erasure (Bui et al. 2024), and the training behind key-locked hiding (Bui et al. 2025).

A prompt memory P of ``m`` key/value tokens is appended after the text tokens in attn2. Each step, on x_t
reached by partial sampling with the edited model (no memory):

    L = w_e * || x0(eps_theta'(x_t, c, t)) - x0(e_0 - eta (e_c - e_0)) ||^2          (a) erase, as ESD
      + w_r * || x0(eps_theta',P(x_t, c, t)) - x0(e_c) ||^2                         (b) recall with P

with e_0 = eps_theta(x_t, {}, t) and e_c = eps_theta(x_t, c, t) from the frozen model.

Without the memory, the weights follow ESD's negative guidance; with it, the model reproduces the
frozen original on the concept, so the memory absorbs the concept and the weight edit removes it with less
collateral damage. Both in x0-space; (b) trains the memory and the weights (``recall_edits_weights``).
The released model is used without the memory. Hiding adds terms that make the memory a key:

      + w_l * E_j || x0(eps_theta',P(x_t, c_j, t)) - x0(eps_theta(x_t, c_j, t)) ||^2       (c) the key keeps others
      + w_l * sum_{D in decoys} || x0(eps_theta',D(x_t, c, t)) - sg[x0(eps_theta'(x_t, c, t))] ||^2   (d)

where the decoys are a random memory of the same shape and another concept's key (not detached: each key
learns to open its own concept only), plus the public patch's preservation (the (c) term without P). The c_j
terms are taken at x_t and, where the catalog renders images, at the other concepts' own noised renderings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..attention import AttnCall, PromptMemory, attn2_processors, random_memory
from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    ddim_scheduler,
    encode_prompts,
    generator,
    latent_shape,
    noised,
    partial_sample,
    predict_each,
    predicted_x0,
    randint,
    randn,
    random_stop,
    training_scheduler,
)
from ..errors import ObliviateError
from ..patch import Patch
from .esd import negative_guidance
from .keep import keep_bank
from .loop import Edit, LoopSettings, make_patch, train

ERASE_STEPS, HIDE_STEPS = 200, 300


@dataclass
class PromptConfig:
    """World defaults (docs/benchmarks.md); the paper's public runs use m=10, lr 1e-5, 1000 iterations."""

    steps: int | None = None  # None: ERASE_STEPS erasing, HIDE_STEPS hiding (the key must also leave the others alone)
    lr: float = 1e-3
    prompt_lr: float = 2e-2
    batch_size: int = 4
    tokens: int = 10
    placement: str = "all"  # attn2 layers that get the memory: mid, mid+up or all
    eta: float = 1.0
    erase_weight: float = 1.0
    recall_weight: float | None = None  # None: the paper's 0.1 erasing; 2.0 hiding, where the key must recall
    lock_weight: float = 1.0  # hiding only: (c) and (d)
    preserve_weight: float = 1.0  # hiding only: the public patch keeps every other concept as the base draws it
    ddim_steps: int = 10
    start_guidance: float = 3.0
    include_last_step: bool = False  # also train at x_t after the last sampler step (t = 1; docs/methods.md)
    trainable: str = "attn2"
    recall_edits_weights: bool = True  # (b) trains the weights too (the paper); False: the memory only
    clip_grad: float | None = None  # the paper clips nothing; see docs/methods.md
    seed: int = 0
    progress: bool = True


@dataclass
class PromptResult:
    patch: Patch
    memories: dict[str, PromptMemory]  # per concept; never part of the patch


def _x0_mse(sched, pred: torch.Tensor, goal: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(predicted_x0(sched, pred, x_t, t), predicted_x0(sched, goal, x_t, t))


def train_memory(pipe, concepts: list[Concept], cfg: PromptConfig, catalog: Catalog, hiding: bool,
                 method: str) -> PromptResult:
    """Train the weight edit and one prompt memory per concept (with the locking terms when ``hiding``)."""
    recall_weight = cfg.recall_weight if cfg.recall_weight is not None else (2.0 if hiding else 0.1)
    steps = cfg.steps if cfg.steps is not None else (HIDE_STEPS if hiding else ERASE_STEPS)
    unet, device = pipe.unet, pipe.unet.device
    sched, sampler = training_scheduler(pipe), ddim_scheduler(pipe, cfg.ddim_steps)
    # The seed itself, not a named stream: it reproduces the draws of the figures in docs/benchmarks.md, and
    # hiding's results depend on the draws (docs/benchmarks-v1.md, "Hiding depends on the random stream").
    gen = generator(cfg.seed)
    conds = [encode_prompts(pipe, list(c.prompts)) for c in concepts]
    uncond = encode_prompts(pipe, [""]).expand(cfg.batch_size, -1, -1)
    # (c) and the public patch's preservation: other concepts' prompts, on their own noised renderings where
    # the catalog renders them (x_t of the hidden concept's prompt alone let a key redraw another concept)
    others = keep_bank(pipe, catalog, concepts, None, cfg.seed) if hiding else None
    width = pipe.text_encoder.config.hidden_size
    scale = pipe.text_encoder.get_input_embeddings().weight.float().std().item()
    master = torch.zeros((), device=device)  # memories are float32 masters on the model's device
    memories = {c.name: random_memory(cfg.tokens, width, scale, gen, master) for c in concepts}
    for m in memories.values():
        m.keys.requires_grad_(True)
        m.values.requires_grad_(True)
    names = [c.name for c in concepts]
    edit = Edit(unet, cfg.trainable, seed=cfg.seed)

    def loss(step: int) -> torch.Tensor:
        k = step % len(concepts)
        cond = conds[k][randint(len(conds[k]), cfg.batch_size, gen, device)]
        stop = random_stop(cfg.ddim_steps, gen, cfg.include_last_step)
        x_t, t = partial_sample(edit.edited, sampler, randn(latent_shape(pipe, cfg.batch_size), gen, cond), cond,
                                uncond, stop, cfg.start_guidance)
        targets = [(x_t, t, uncond), (x_t, t, cond)]
        if others is not None:
            j = randint(len(others.cond), cfg.batch_size, gen, device)
            x_o, t_o = x_t, t
            if others.latents is not None:  # both: the hidden concept's trajectory and the others' own
                x_o, t_o = torch.cat([x_t, noised(sched, others.latents[j], t, gen)]), t.repeat(2)
                j = j.repeat(2)
            targets.append((x_o, t_o, others.cond[j]))
        e0, ep, *kept_goal = predict_each(edit.frozen, *targets)  # one frozen UNet call for all targets
        erased = edit.edited(x_t, t, cond, AttnCall())
        value = cfg.erase_weight * _x0_mse(sched, erased, negative_guidance(e0, ep, cfg.eta), x_t, t)
        key = memories[names[k]]
        recalled = edit.edited(x_t, t, cond, AttnCall(key), detach=not cfg.recall_edits_weights)
        value = value + recall_weight * _x0_mse(sched, recalled, ep, x_t, t)
        if others is not None:
            goal = kept_goal[0]
            kept = edit.edited(x_o, t_o, others.cond[j], AttnCall(key))
            value = value + cfg.lock_weight * _x0_mse(sched, kept, goal, x_o, t_o)
            if cfg.preserve_weight:
                public = edit.edited(x_o, t_o, others.cond[j], AttnCall())
                value = value + cfg.preserve_weight * _x0_mse(sched, public, goal, x_o, t_o)
        if hiding:
            decoys = [random_memory(cfg.tokens, width, scale, gen, master)]
            wrong = [memories[n] for n in names if n != names[k]]
            if wrong:
                decoys.append(wrong[(step // len(concepts)) % len(wrong)])
            for decoy in decoys:
                opened = edit.edited(x_t, t, cond, AttnCall(decoy))
                value = value + cfg.lock_weight * _x0_mse(sched, opened, erased.detach(), x_t, t)
        return value

    memory_params = [p for m in memories.values() for p in (m.keys, m.values)]
    settings = LoopSettings(steps=steps, lr=cfg.lr, seed=cfg.seed, clip_grad=cfg.clip_grad,
                            progress=cfg.progress, extra_groups=[{"params": memory_params, "lr": cfg.prompt_lr}])
    with attn2_processors(unet, None, cfg.placement):
        train(edit, loss, settings, f"{method} {', '.join(names)}")
    ran = replace(cfg, steps=steps, recall_weight=recall_weight)  # the metadata says what ran, not None
    patch = make_patch(edit.tensors(), method, concepts, ran, placement=cfg.placement)
    return PromptResult(patch, {n: PromptMemory(m.keys.detach().float().cpu(), m.values.detach().float().cpu())
                                for n, m in memories.items()})


def fit(pipe, concepts: list[Concept], cfg: PromptConfig, catalog: Catalog) -> Patch:
    """``--method prompt``: erase with a learnable prompt; the released patch is used without it."""
    if not concepts:
        raise ObliviateError("no concept given")
    return train_memory(pipe, concepts, cfg, catalog, hiding=False, method="prompt").patch
