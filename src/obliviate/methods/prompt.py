"""Learnable-prompt erasure (Bui et al. 2024): a prompt memory absorbs the concept, the release drops it.

A prompt memory P of ``m`` key/value tokens is appended after the text tokens in attn2. Each step, on x_t
reached by partial sampling with the edited model (no memory):

    L = w_e * || x0(eps_theta'(x_t, c, t)) - x0(e_0 - eta (e_c - e_0)) ||^2          (a) erase, as ESD
      + w_r * || x0(eps_theta',P(x_t, c, t)) - x0(e_c) ||^2                         (b) recall with P

with e_0 = eps_theta(x_t, {}, t) and e_c = eps_theta(x_t, c, t) from the frozen model.

Without the memory, the weights follow ESD's negative guidance; with it, the model reproduces the
frozen original on the concept, so the memory absorbs the concept and the weight edit removes it with less
collateral damage. Both in x0-space; (b) trains the memory and the weights (``recall_edits_weights``).
The released model is used without the memory. Key-locked hiding (Bui et al. 2025) adds terms on the same
training that make each memory a key (:mod:`obliviate.hiding.paper`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..attention import AttnCall, PromptMemory, random_memory
from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, partial_sampler, predicted_x0, randint, training_scheduler
from ..families import Conditioning, attention, encode, text_width, token_embeddings
from ..patch import Patch
from ..terms import distance, esd_point, esd_target
from .configs import MemoryTraining, PromptConfig
from .loop import Edit, LoopSettings, make_patch, train

__all__ = ["MemoryTrainer", "PromptConfig", "fit"]


class MemoryTrainer:
    """The weight edit and one prompt memory per concept, and terms (a) and (b) of one training step."""

    def __init__(self, pipe, concepts: list[Concept], cfg: MemoryTraining) -> None:
        self.pipe, self.concepts, self.cfg = pipe, concepts, cfg
        self.sched, self.sampler = training_scheduler(pipe), partial_sampler(pipe, cfg.ddim_steps)
        # The seed itself, not a named stream: it reproduces the draws of the figures in docs/benchmarks.md, and
        # hiding's results depend on the draws (docs/benchmarks-v1.md, "Hiding depends on the random stream").
        self.gen = generator(cfg.seed)
        self.conds = [encode(pipe, list(c.prompts)) for c in concepts]
        self.uncond = encode(pipe, [""]).expand(cfg.batch_size)
        self.width = text_width(pipe)
        self.scale = token_embeddings(pipe).std().item()
        self.edit = Edit(pipe, cfg.trainable, seed=cfg.seed)
        self.master = torch.zeros((), device=self.edit.module.device)  # memories are float32 on the model's device
        self.memories = {c.name: self.random_memory() for c in concepts}
        for m in self.memories.values():
            m.keys.requires_grad_(True)
            m.values.requires_grad_(True)

    def random_memory(self) -> PromptMemory:
        return random_memory(self.cfg.tokens, self.width, self.scale, self.gen, self.master)

    def x0_distance(self, pred: torch.Tensor, goal: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return distance(predicted_x0(self.sched, pred, x_t, t), predicted_x0(self.sched, goal, x_t, t))

    def point(self, step: int) -> tuple[int, Conditioning, torch.Tensor, torch.Tensor]:
        """The step's concept (in turn), a batch of its prompts and x_t by partial sampling with the edit."""
        cfg, k = self.cfg, step % len(self.concepts)
        cond = self.conds[k][randint(len(self.conds[k]), cfg.batch_size, self.gen, self.master.device)]
        x_t, t = esd_point(self.pipe, self.edit.edited, self.sampler, cond, self.uncond, self.gen,
                           cfg.start_guidance, cfg.include_last_step)
        return k, cond, x_t, t

    def terms(self, k: int, cond: Conditioning, x_t: torch.Tensor, t: torch.Tensor,
              *also: tuple[torch.Tensor, torch.Tensor, Conditioning]) \
            -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(a) + (b) at (x_t, t); returns their sum, the edited output without the memory, and the frozen outputs
        of ``also`` (computed in the same call as the targets)."""
        cfg, edit = self.cfg, self.edit
        goal, _, e_cond, more = esd_target(edit.frozen, x_t, t, cond, self.uncond, cfg.eta, *also)
        erased = edit.edited(x_t, t, cond, AttnCall())
        value = cfg.erase_weight * self.x0_distance(erased, goal, x_t, t)
        key = self.memories[self.concepts[k].name]
        recalled = edit.edited(x_t, t, cond, AttnCall(key), detach=not cfg.recall_edits_weights)
        return value + cfg.recall_weight * self.x0_distance(recalled, e_cond, x_t, t), erased, more

    def train(self, loss: Callable[[int], torch.Tensor], method: str) -> Patch:
        cfg = self.cfg
        params = [p for m in self.memories.values() for p in (m.keys, m.values)]
        settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, clip_grad=cfg.clip_grad,
                                progress=cfg.progress, extra_groups=[{"params": params, "lr": cfg.prompt_lr}])
        with attention(self.pipe, None, cfg.placement):
            train(self.edit, loss, settings, f"{method} {', '.join(c.name for c in self.concepts)}")
        return make_patch(self.edit.tensors(), method, self.concepts, cfg, placement=cfg.placement)

    def trained_memories(self) -> dict[str, PromptMemory]:
        return {n: PromptMemory(m.keys.detach().float().cpu(), m.values.detach().float().cpu())
                for n, m in self.memories.items()}


def fit(pipe, concepts: list[Concept], cfg: PromptConfig, catalog: Catalog) -> Patch:
    """``--method prompt``: erase with a learnable prompt; the released patch is used without it."""
    trainer = MemoryTrainer(pipe, concepts, cfg)
    return trainer.train(lambda step: trainer.terms(*trainer.point(step))[0], "prompt")
