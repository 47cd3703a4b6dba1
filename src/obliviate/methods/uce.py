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


def _replace(prompt: str, concept: Concept, guide: str) -> str:
    for word in sorted(concept.words, key=len, reverse=True):
        if word in prompt:
            return " ".join(prompt.replace(word, guide).split())
    raise ObliviateError(f"prompt {prompt!r} does not name {concept.name!r}")


def _pairs(pipe, concept: Concept, guide: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_i, c_i^guide) row pairs over the concept's prompts, aligned from the end of the sequence."""
    tok = pipe.tokenizer
    prompts = list(concept.prompts)
    guides = [_replace(p, concept, guide) for p in prompts]
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


def fit(pipe, concepts: list[Concept], cfg: UCEConfig, catalog: Catalog) -> Patch:
    """Erase ``concepts`` in closed form; returns the edit of every attn2 to_k / to_v as a Patch."""
    pairs = [_pairs(pipe, c, cfg.guide) for c in concepts]
    c_erase = torch.cat([p[0] for p in pairs])
    c_guide = torch.cat([p[1] for p in pairs])
    c_keep = _keep_vectors(pipe, catalog.keep(concepts, cfg.preserve))
    d = c_erase.shape[1]
    rhs = cfg.erase_scale * c_erase.T @ c_erase + cfg.lam * torch.eye(d, dtype=torch.float64)
    if c_keep is not None:
        rhs = rhs + cfg.preserve_scale * c_keep.T @ c_keep
    inverse = torch.linalg.inv(rhs)
    tensors = {}
    for name, param in pipe.unet.named_parameters():
        if ".attn2.to_k." not in name and ".attn2.to_v." not in name:
            continue
        w_old = param.detach().double().cpu()
        lhs = cfg.erase_scale * (w_old @ c_guide.T) @ c_erase + cfg.lam * w_old
        if c_keep is not None:
            lhs = lhs + cfg.preserve_scale * (w_old @ c_keep.T) @ c_keep
        tensors[f"delta.unet.{name}"] = (lhs @ inverse - w_old).float().cpu()
    if not tensors:
        raise ObliviateError("the UNet has no attn2 to_k / to_v projections")
    return make_patch(tensors, "uce", concepts, cfg)
