"""Unified Concept Editing (Gandikota et al., WACV 2024): a closed-form edit of every attn2 to_k / to_v.

For each projection W (out x d_text), with c_i the text-encoder vectors of the concepts to erase, v_i* =
W_old c_i^guide their targets (the guide prompt: the concept's prompt with the concept replaced by
``guide``, "" by default), and c_j the vectors of concepts to preserve:

    W = (sum_i v_i* c_i^T + sum_j W_old c_j c_j^T + lam W_old) (sum_i c_i c_i^T + sum_j c_j c_j^T + lam I)^-1

The vectors are the hidden states from the concept's first token to the end of the padded sequence: in a
causal text encoder every later token (end-of-text and pads) carries the concept too. The solve runs in
float64 on the CPU whatever the model's device and dtype (it is small: d_text x d_text).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention import token_positions
from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import encode_prompts
from ..errors import ObliviateError
from ..patch import Patch
from .loop import make_patch


@dataclass
class UCEConfig:
    guide: str = ""  # replacement word; "" erases towards the prompt without the concept
    preserve: tuple[str, ...] | None = None  # None: every other concept of the catalog
    lam: float = 0.1
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    seed: int = 0  # unused (closed form); kept so every method takes a seed
    progress: bool = True


def _states(pipe, prompts: list[str]) -> torch.Tensor:
    """Text states in float64 on the CPU: the closed form is solved there, in full precision, on any device."""
    return encode_prompts(pipe, prompts).double().cpu()


def replace_words(prompt: str, concept: Concept, guide: str) -> str:
    for word in sorted(concept.words, key=len, reverse=True):
        if word in prompt:
            return " ".join(prompt.replace(word, guide).split())
    raise ObliviateError(f"prompt {prompt!r} does not name {concept.name!r}")


def _pairs(pipe, concept: Concept, guide: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_i, c_i^guide) row pairs over the concept's prompts, aligned from the end of the sequence."""
    tok = pipe.tokenizer
    prompts = list(concept.prompts)
    guides = [replace_words(p, concept, guide) for p in prompts]
    concept_states, guide_states = _states(pipe, prompts), _states(pipe, guides)
    mask = token_positions(tok, prompts, list(concept.words))
    src, dst = [], []
    length = concept_states.shape[1]
    for b in range(len(prompts)):
        start = int(mask[b].nonzero()[0])
        shift = len(tok(prompts[b]).input_ids) - len(tok(guides[b]).input_ids)  # tokens the concept added
        lower = start if guide else start - 1  # an empty guide maps the concept's tokens onto the one before
        for pos in range(start, length):
            src.append(concept_states[b, pos])
            dst.append(guide_states[b, min(max(pos - shift, lower), length - 1)])
    return torch.stack(src), torch.stack(dst)


def _keep_vectors(pipe, kept: list[Concept]) -> torch.Tensor | None:
    rows = []
    for keep in kept:
        states = _states(pipe, list(keep.prompts))
        mask = token_positions(pipe.tokenizer, list(keep.prompts), list(keep.words))
        for b in range(len(keep.prompts)):
            rows.append(states[b, int(mask[b].nonzero()[0]):])
    return torch.cat(rows) if rows else None


def cross_attention_kv(unet) -> dict[str, torch.Tensor]:
    """Every attn2 to_k / to_v weight, float64 on the CPU: the matrices a closed-form edit solves for."""
    weights = {name: param.detach().double().cpu() for name, param in unet.named_parameters()
               if ".attn2.to_k." in name or ".attn2.to_v." in name}
    if not weights:
        raise ObliviateError("the UNet has no attn2 to_k / to_v projections")
    return weights


def normal_inverse(erase: torch.Tensor, keep: torch.Tensor | None, cfg: UCEConfig) -> torch.Tensor:
    """(e C^T C + p K^T K + lam I)^-1: the right-hand factor of UCE's solution, the same for every projection."""
    gram = cfg.erase_scale * erase.T @ erase + cfg.lam * torch.eye(erase.shape[1], dtype=torch.float64)
    if keep is not None:
        gram = gram + cfg.preserve_scale * keep.T @ keep
    return torch.linalg.inv(gram)


def solve(inverse: torch.Tensor, anchor: torch.Tensor, erase: torch.Tensor, erase_targets: torch.Tensor,
          keep: torch.Tensor | None, keep_targets: torch.Tensor | None, cfg: UCEConfig) -> torch.Tensor:
    """UCE's normal equations for one projection: rows of ``erase`` map to ``erase_targets`` (outputs), rows of
    ``keep`` to ``keep_targets``, and ``lam`` pulls the solution towards ``anchor``; ``inverse`` is
    :func:`normal_inverse` of the same rows."""
    lhs = cfg.erase_scale * erase_targets.T @ erase + cfg.lam * anchor
    if keep is not None:
        lhs = lhs + cfg.preserve_scale * keep_targets.T @ keep
    return lhs @ inverse


def fit(pipe, concepts: list[Concept], cfg: UCEConfig, catalog: Catalog) -> Patch:
    """Erase ``concepts`` in closed form; returns the edit of every attn2 to_k / to_v as a Patch."""
    pairs = [_pairs(pipe, c, cfg.guide) for c in concepts]
    c_erase = torch.cat([p[0] for p in pairs])
    c_guide = torch.cat([p[1] for p in pairs])
    c_keep = _keep_vectors(pipe, catalog.keep(concepts, cfg.preserve))
    inverse = normal_inverse(c_erase, c_keep, cfg)
    tensors = {}
    for name, w_old in cross_attention_kv(pipe.unet).items():
        keep_targets = None if c_keep is None else c_keep @ w_old.T
        w_new = solve(inverse, w_old, c_erase, c_guide @ w_old.T, c_keep, keep_targets, cfg)
        tensors[f"delta.unet.{name}"] = (w_new - w_old).float()
    return make_patch(tensors, "uce", concepts, cfg)
