"""The ``paper`` hiding design (Bui et al. 2025): the learnable prompt's training (:mod:`obliviate.methods.prompt`,
terms (a) and (b)) with the terms that make each concept's memory a key:

      + w_l * E_j || x0(eps_theta',P(x_j, c_j, t)) - x0(eps_theta(x_j, c_j, t)) ||^2       (c) the key keeps others
      + w_p * E_j || x0(eps_theta'(x_j, c_j, t)) - x0(eps_theta(x_j, c_j, t)) ||^2         the public patch keeps them
      + w_l * sum_{D in decoys} || x0(eps_theta',D(x_t, c, t)) - sg[x0(eps_theta'(x_t, c, t))] ||^2   (d)

The c_j terms are taken at x_t and at the other concepts' own noised images (x_t of the hidden concept's prompt
alone let a key redraw another concept); the decoys are a random memory of the same shape and another concept's
key (not detached: each key learns to open its own concept only). docs/hiding.md red-teams the design: it
re-routes the concepts instead of removing them.
"""

from __future__ import annotations

import torch

from ..attention import AttnCall
from ..bench import Concept
from ..catalog import Catalog
from ..families import Conditioning
from ..methods.prompt import MemoryTrainer
from ..terms import keep_bank, keep_rows
from .config import PaperHideConfig
from .keys import Key


def hide_paper(pipe, concepts: list[Concept], cfg: PaperHideConfig, catalog: Catalog):
    """The public patch and one prompt-memory key per concept."""
    trainer = MemoryTrainer(pipe, concepts, cfg)
    others = keep_bank(pipe, catalog, concepts, None, cfg.seed)
    edit, names, b = trainer.edit, [c.name for c in concepts], cfg.batch_size

    def loss(step: int) -> torch.Tensor:
        k, cond, x_t, t = trainer.point(step)
        also = []
        if others is not None:  # both: the hidden concept's trajectory and the others' own images
            kept = keep_rows(others, trainer.sched, b, trainer.gen, t=t)
            x_o, t_o, c_o = torch.cat([x_t, kept.x]), t.repeat(2), Conditioning.cat([kept.cond, kept.cond])
            also = [(x_o, t_o, c_o)]
        value, erased, goals = trainer.terms(k, cond, x_t, t, *also)
        key = trainer.memories[names[k]]
        if others is not None:
            value = value + cfg.lock_weight * trainer.x0_distance(edit.edited(x_o, t_o, c_o, AttnCall(key)), goals[0],
                                                                  x_o, t_o)
            if cfg.preserve_weight:
                value = value + cfg.preserve_weight * trainer.x0_distance(edit.edited(x_o, t_o, c_o, AttnCall()),
                                                                          goals[0], x_o, t_o)
        decoys = [trainer.random_memory()]
        wrong = [trainer.memories[n] for n in names if n != names[k]]
        if wrong:
            decoys.append(wrong[(step // len(concepts)) % len(wrong)])
        for decoy in decoys:
            opened = edit.edited(x_t, t, cond, AttnCall(decoy))
            value = value + cfg.lock_weight * trainer.x0_distance(opened, erased.detach(), x_t, t)
        return value

    patch = trainer.train(loss, "hide")
    patch.metadata["design"] = "paper"
    return patch, {n: Key.of_memory(n, m, cfg.placement) for n, m in trainer.trained_memories().items()}
