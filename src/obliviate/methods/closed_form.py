"""UCE's closed form, shared by UCE and RECE: the text vectors of a concept and of what it maps onto, the
vectors to keep, the projections that read text, and the normal equations that edit them.

The vectors are the text states from the concept's first token to the end of the padded sequence: in a causal
text encoder every later token (end-of-text and pads) carries the concept too. Where a family has a pooled text
embedding (SDXL), the projection that reads it is edited by the same normal equations on one pooled vector per
prompt (:func:`pooled_deltas`), as UCE's authors edit Flux's pooled text embedder. Everything is solved in float64
on the CPU whatever the model's device and dtype (the matrices are d_text x d_text).
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..families import denoiser, encode, family_of, pooled_layers, segments, text_layers
from ..terms import swap, token_positions


def _states(pipe, prompts: list[str]) -> torch.Tensor:
    return encode(pipe, prompts).states.double().cpu()


def concept_pairs(pipe, concept: Concept, guide: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_i, c_i^guide) row pairs over the concept's prompts, aligned from the end of each tokenizer's segment."""
    prompts = list(concept.prompts)
    guides = [swap(p, concept, guide) for p in prompts]
    concept_states, guide_states = _states(pipe, prompts), _states(pipe, guides)
    mask = token_positions(pipe, prompts, list(concept.words))
    src, dst = [], []
    for part in segments(pipe):
        if part.tokenizer is None:
            continue
        tok, end = part.tokenizer, part.start + part.length
        for b in range(len(prompts)):
            start = part.start + int(mask[b, part.start:end].nonzero()[0])
            shift = len(tok(prompts[b]).input_ids) - len(tok(guides[b]).input_ids)  # tokens the concept added
            lower = start if guide else max(start - 1, part.start)  # an empty guide: onto the token before
            for pos in range(start, end):
                src.append(concept_states[b, pos])
                dst.append(guide_states[b, min(max(pos - shift, lower), end - 1)])
    return torch.stack(src), torch.stack(dst)


UNCONDITIONAL = ""  # the prompt of classifier-free guidance's negative branch, which every sample subtracts


def keep_vectors(pipe, kept: list[Concept], unconditional: bool = True) -> torch.Tensor | None:
    """The text vectors an edit must not move: the kept concepts' (from each concept's first token on, in every
    tokenizer's segment) and (``unconditional``) the empty prompt's, at every position. Moving the unconditional
    conditioning moves guidance for every prompt: on SD3 the edit of circle without it changed the empty prompt's
    pooled projection by 157% and took most of the bench with circle (docs/benchmarks.md, "The SD3 world"). Where
    a family conditions the empty prompt with zeros (SDXL) its rows are zero and change nothing."""
    rows = []
    if unconditional:
        empty = _states(pipe, [UNCONDITIONAL])[0]
        rows += [empty[part.start:part.start + part.length] for part in segments(pipe) if part.tokenizer is not None]
    for keep in kept:
        states = _states(pipe, list(keep.prompts))
        mask = token_positions(pipe, list(keep.prompts), list(keep.words))
        for part in segments(pipe):
            end = part.start + part.length
            for b in range(len(keep.prompts)):
                if part.tokenizer is not None:
                    rows.append(states[b, part.start + int(mask[b, part.start:end].nonzero()[0]):end])
    return torch.cat(rows) if rows else None


def text_projections(pipe) -> dict[str, torch.Tensor]:
    """The weights of every projection that reads the text states, float64 on the CPU: what the edit solves for."""
    model = denoiser(pipe)
    return {name: model.get_parameter(name).detach().double().cpu() for name in text_layers(pipe)}


def normal_inverse(erase: torch.Tensor, keep: torch.Tensor | None, lam: float, erase_scale: float,
                   preserve_scale: float) -> torch.Tensor:
    """(e C^T C + p K^T K + lam I)^-1: the right-hand factor of UCE's solution, the same for every projection."""
    gram = erase_scale * erase.T @ erase + lam * torch.eye(erase.shape[1], dtype=torch.float64)
    if keep is not None:
        gram = gram + preserve_scale * keep.T @ keep
    return torch.linalg.inv(gram)


def solve(inverse: torch.Tensor, anchor: torch.Tensor, erase: torch.Tensor, erase_targets: torch.Tensor,
          keep: torch.Tensor | None, keep_targets: torch.Tensor | None, lam: float, erase_scale: float,
          preserve_scale: float) -> torch.Tensor:
    """UCE's normal equations for one projection: rows of ``erase`` map to ``erase_targets`` (outputs), rows of
    ``keep`` to ``keep_targets``, and ``lam`` pulls the solution towards ``anchor``; ``inverse`` is
    :func:`normal_inverse` of the same rows."""
    lhs = erase_scale * erase_targets.T @ erase + lam * anchor
    if keep is not None:
        lhs = lhs + preserve_scale * keep_targets.T @ keep
    return lhs @ inverse


def deltas(pipe, edited: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The patch tensors of an edit of :func:`text_projections` (float32 deltas)."""
    component = family_of(pipe).denoiser
    return {f"delta.{component}.{name}": (edited[name] - w).float() for name, w in original.items()}


def pooled_deltas(pipe, concepts: list[Concept], guide: str, kept: list[Concept], scales: tuple[float, float, float],
                  unconditional: bool = True) -> dict[str, torch.Tensor]:
    """UCE's edit of the columns that read the pooled text embedding (none on SD): each concept prompt's pooled
    vector maps onto its guide prompt's, every kept prompt's (and ``unconditional``, the empty prompt's) stays,
    as patch tensors."""
    layers = pooled_layers(pipe)
    if not layers:
        return {}
    prompts = [p for c in concepts for p in c.prompts]
    guides = [swap(p, c, guide) for c in concepts for p in c.prompts]
    kept_prompts = [p for c in kept for p in c.prompts] + ([UNCONDITIONAL] if unconditional else [])
    c_erase, c_guide = encode(pipe, prompts).pooled.double().cpu(), encode(pipe, guides).pooled.double().cpu()
    c_keep = encode(pipe, kept_prompts).pooled.double().cpu() if kept_prompts else None
    inverse = normal_inverse(c_erase, c_keep, *scales)
    model, component = denoiser(pipe), family_of(pipe).denoiser
    out = {}
    for name, columns in layers.items():
        weight = model.get_parameter(name).detach().double().cpu()
        w = weight[:, columns]
        edited = solve(inverse, w, c_erase, c_guide @ w.T, c_keep, None if c_keep is None else c_keep @ w.T, *scales)
        delta = torch.zeros_like(weight)
        delta[:, columns] = edited - w
        out[f"delta.{component}.{name}"] = delta.float()
    return out
