"""Unified Concept Editing (Gandikota et al., WACV 2024): a closed-form edit of every attn2 to_k / to_v.

For each projection W (out x d_text), with c_i the text-encoder vectors of the concepts to erase, v_i* =
W_old c_i^guide their targets (the guide prompt: the concept's prompt with the concept replaced by
``guide``, "" by default), and c_j the vectors of concepts to preserve:

    W = (sum_i v_i* c_i^T + sum_j W_old c_j c_j^T + lam W_old) (sum_i c_i c_i^T + sum_j c_j c_j^T + lam I)^-1

The vectors are the hidden states from the concept's first token to the end of the padded sequence: in a
causal text encoder every later token (end-of-text and pads) carries the concept too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..attention import token_positions
from ..errors import ObliviateError
from ..patch import Patch
from ..pipeline import Model
from .common import config_dict, encode_prompts
from .concepts import Target, resolve_target


@dataclass
class UCEConfig:
    guide: str = ""                   # replacement word; "" erases towards the prompt without the concept
    preserve: tuple[str, ...] | None = None  # None: every other concept of the bench (world) / none (SD)
    lam: float = 0.1
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    seed: int = 0
    progress: bool = True


def _replace(prompt: str, target: Target, guide: str) -> str:
    for word in sorted(target.words, key=len, reverse=True):
        if word in prompt:
            return " ".join(prompt.replace(word, guide).split())
    raise ObliviateError(f"prompt {prompt!r} does not name {target.name!r}")


def _pairs(model: Model, target: Target, guide: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_i, c_i^guide) row pairs over the target's prompts, aligned from the end of the sequence."""
    tok = model.pipe.tokenizer
    prompts = list(target.prompts)
    guides = [_replace(p, target, guide) for p in prompts]
    concept_states, guide_states = encode_prompts(model, prompts).float(), encode_prompts(model, guides).float()
    mask = token_positions(tok, prompts, list(target.words))
    src, dst = [], []
    length = concept_states.shape[1]
    for b in range(len(prompts)):
        start = int(mask[b].nonzero()[0])
        n_guide_tokens = len(tok(guides[b]).input_ids)
        shift = len(tok(prompts[b]).input_ids) - n_guide_tokens  # how many tokens the concept added
        lower = start if guide else start - 1  # an empty guide maps the concept's tokens onto the one before
        for pos in range(start, length):
            src.append(concept_states[b, pos])
            dst.append(guide_states[b, min(max(pos - shift, lower), length - 1)])
    return torch.stack(src), torch.stack(dst)


def _preserve_vectors(model: Model, targets: list[Target], names: tuple[str, ...] | None) -> torch.Tensor | None:
    if names is None:
        if not model.is_world:
            return None
        from ..world import concepts

        names = tuple(c.name for c in concepts() if c.name not in {t.name for t in targets})
    rows = []
    for name in names:
        keep = resolve_target(model, name)
        states = encode_prompts(model, list(keep.prompts)).float()
        mask = token_positions(model.pipe.tokenizer, list(keep.prompts), list(keep.words))
        for b in range(len(keep.prompts)):
            start = int(mask[b].nonzero()[0])
            rows.append(states[b, start:])
    return torch.cat(rows) if rows else None


def fit(model: Model, concepts: list[str], cfg: UCEConfig) -> Patch:
    """Erase ``concepts`` in closed form; returns the edit of every attn2 to_k / to_v as a Patch."""
    start = time.time()
    if not concepts:
        raise ObliviateError("no concept to erase")
    targets = [resolve_target(model, c) for c in concepts]
    pairs = [_pairs(model, t, cfg.guide) for t in targets]
    c_erase = torch.cat([p[0] for p in pairs]).double()
    c_guide = torch.cat([p[1] for p in pairs]).double()
    c_keep = _preserve_vectors(model, targets, cfg.preserve)
    d = c_erase.shape[1]
    rhs_common = cfg.erase_scale * c_erase.T @ c_erase + cfg.lam * torch.eye(d, dtype=torch.float64)
    if c_keep is not None:
        c_keep = c_keep.double()
        rhs_common = rhs_common + cfg.preserve_scale * c_keep.T @ c_keep
    inverse = torch.linalg.inv(rhs_common)
    tensors = {}
    for name, param in model.pipe.unet.named_parameters():
        if ".attn2.to_k." not in name and ".attn2.to_v." not in name:
            continue
        w_old = param.detach().double()
        lhs = cfg.erase_scale * (w_old @ c_guide.T) @ c_erase + cfg.lam * w_old
        if c_keep is not None:
            lhs = lhs + cfg.preserve_scale * (w_old @ c_keep.T) @ c_keep
        w_new = lhs @ inverse
        tensors[f"delta.unet.{name}"] = (w_new - w_old).float().cpu()
    if not tensors:
        raise ObliviateError("the UNet has no attn2 to_k / to_v projections")
    meta = {"method": "uce", "concepts": [t.name for t in targets], "config": config_dict(cfg),
            "base_fingerprint": model.fingerprint, "seconds": round(time.time() - start, 3)}
    return Patch(tensors, meta)
