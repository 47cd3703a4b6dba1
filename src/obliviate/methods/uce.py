"""Unified Concept Editing (Gandikota et al., WACV 2024): a closed-form edit of every attn2 to_k / to_v.

For each projection W (out x d_text), with c_i the text-encoder vectors of the concepts to erase, v_i* =
W_old c_i^guide their targets (the guide prompt: the concept's prompt with the concept replaced by
``guide``, "" by default), and c_j the vectors of concepts to preserve:

    W = (sum_i v_i* c_i^T + sum_j W_old c_j c_j^T + lam W_old) (sum_i c_i c_i^T + sum_j c_j c_j^T + lam I)^-1

The vectors and the solve: :mod:`.closed_form`.
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..patch import Patch
from .closed_form import concept_pairs, deltas, keep_vectors, normal_inverse, pooled_deltas, solve, text_projections
from .configs import UCEConfig
from .loop import make_patch

__all__ = ["UCEConfig", "fit"]


def fit(pipe, concepts: list[Concept], cfg: UCEConfig, catalog: Catalog) -> Patch:
    """Erase ``concepts`` in closed form; returns the edit of every projection that reads text as a Patch."""
    pairs = [concept_pairs(pipe, c, cfg.guide) for c in concepts]
    c_erase = torch.cat([p[0] for p in pairs])
    c_guide = torch.cat([p[1] for p in pairs])
    kept = catalog.keep(concepts, cfg.preserve)
    c_keep = keep_vectors(pipe, kept, cfg.keep_unconditional)
    scales = (cfg.lam, cfg.erase_scale, cfg.preserve_scale)
    inverse = normal_inverse(c_erase, c_keep, *scales)
    original = text_projections(pipe)
    edited = {name: solve(inverse, w, c_erase, c_guide @ w.T, c_keep, None if c_keep is None else c_keep @ w.T,
                          *scales) for name, w in original.items()}
    pooled = pooled_deltas(pipe, concepts, cfg.guide, kept, scales, cfg.keep_unconditional) if cfg.pooled else {}
    return make_patch({**deltas(pipe, edited, original), **pooled}, "uce", concepts, cfg)
