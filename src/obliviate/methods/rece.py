"""RECE, Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024): UCE, then rounds of closed-form
adversarial embeddings erased in closed form.

UCE leaves embeddings other than the concept's own that still reach it through the edited keys and values
(concept inversion finds them). Each round r derives one, in closed form, from the current projections W_r
and the original W (every attn2 to_k / to_v, index l), for each text vector c of the concept's prompts:

    c' = argmin_c'  sum_l ||W_r,l c' - W_l c||^2 + reg ||c'||^2
       = (sum_l W_r,l^T W_r,l + reg I)^-1 (sum_l W_r,l^T W_l) c

(c' makes the edited model attend as the original did to the concept; the ridge term is the paper's
regularisation, which keeps c' small and so away from unrelated concepts), then erases it with UCE's normal
equations: W_r+1 = UCE(W; erase c, c'_1 .. c'_r+1 towards the guide, keep every other concept).
The paper solves each round around W_r with only c'_r and an empty prompt to keep; with UCE's preservation
of every other concept the concept's own vectors must stay in the erase set (measured: without them the
other concepts' terms pull the concept back), and a solve around W with all of them is the same edit in
one equation.
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..patch import Patch
from ..progress import bar
from .closed_form import concept_pairs, deltas, keep_vectors, normal_inverse, pooled_deltas, solve, text_projections
from .configs import RECEConfig
from .loop import make_patch

__all__ = ["RECEConfig", "fit"]


def adversarial_map(edited: dict[str, torch.Tensor], original: dict[str, torch.Tensor], reg: float) -> torch.Tensor:
    """The d x d matrix M with c' = M c: the embedding that makes the edited projections reproduce the original
    ones on c (least squares over every layer, ridge ``reg``)."""
    d = next(iter(edited.values())).shape[1]
    gram = reg * torch.eye(d, dtype=torch.float64)
    cross = torch.zeros(d, d, dtype=torch.float64)
    for name, w_new in edited.items():
        gram += w_new.T @ w_new
        cross += w_new.T @ original[name]
    return torch.linalg.solve(gram, cross)


def fit(pipe, concepts: list[Concept], cfg: RECEConfig, catalog: Catalog) -> Patch:
    """UCE on ``concepts``, then ``cfg.rounds`` rounds of derive-and-erase; returns the total edit as a Patch."""
    pairs = [concept_pairs(pipe, c, cfg.guide) for c in concepts]
    c_concept = torch.cat([p[0] for p in pairs])
    c_guide = torch.cat([p[1] for p in pairs])
    kept = catalog.keep(concepts, cfg.preserve)
    c_keep = keep_vectors(pipe, kept, cfg.keep_unconditional)
    original = text_projections(pipe)
    keep_targets = {name: None if c_keep is None else c_keep @ w.T for name, w in original.items()}
    scales = (cfg.lam, cfg.erase_scale, cfg.preserve_scale)

    def erase(c_erase: torch.Tensor) -> dict[str, torch.Tensor]:
        guides = c_guide.repeat(c_erase.shape[0] // c_guide.shape[0], 1)
        inverse = normal_inverse(c_erase, c_keep, *scales)
        return {name: solve(inverse, w, c_erase, guides @ w.T, c_keep, keep_targets[name], *scales)
                for name, w in original.items()}

    c_erase = c_concept
    edited = erase(c_erase)
    for _ in bar(range(cfg.rounds), desc="rece", unit="round", enabled=cfg.progress):
        c_adv = c_concept @ adversarial_map(edited, original, cfg.reg).T
        c_erase = torch.cat([c_erase, c_adv])
        edited = erase(c_erase)
    pooled = pooled_deltas(pipe, concepts, cfg.guide, kept, scales, cfg.keep_unconditional) if cfg.pooled else {}
    return make_patch({**deltas(pipe, edited, original), **pooled}, "rece", concepts, cfg)
