"""The patch-direction attack: read a public patch for where its keys might live, and try memories built there.

A key acts through the text keys and values, the family's ``attn2-kv`` set (a UNet's attn2 ``to_k``/``to_v``,
an MMDiT's ``add_k_proj``/``add_v_proj``): a prompt memory is read by them, a LoRA key changes them. If the public
patch was trained together with its keys, its ``to_k``/``to_v`` deltas are largest along the text-space
directions the keys use (issue #17's red team measured about 80% of a paper-design key's norm in the 8
strongest; docs/hiding.md reproduces 70-81%). The attacker stacks the deltas, takes their top right
singular vectors V_r (text-space directions), and draws memories inside that span at the token embeddings'
scale:

    Delta = [dW_k; dW_v over every attn2 layer],   Delta = U S V^T,   P = Z V_r^T * scale * sqrt(d / r),  Z ~ N(0, 1)

then keeps whichever memory draws the concept most. Without any images or optimisation it is the cheapest
attack on a hiding patch; a design whose patch carries no information about its keys gives it nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention import PromptMemory
from ..diffusion import generator
from ..errors import ObliviateError
from ..families import family_of, token_embeddings, trainable_names
from ..patch import Patch, patch_updates


@dataclass
class DirectionAttackConfig:
    rank: int = 8  # strongest directions the memories are built from
    tokens: int = 10
    tries: int = 100
    seed: int = 0


def strongest_directions(pipe, patch: Patch, rank: int) -> torch.Tensor:
    """The ``rank`` text-space directions (rows, unit norm) along which ``patch``'s deltas of ``pipe``'s text
    keys and values act most: the family's ``attn2-kv`` set (a UNet's attn2 ``to_k``/``to_v``, an MMDiT's
    ``add_k_proj``/``add_v_proj``), weight deltas and LoRA products alike, biases left out."""
    component = family_of(pipe).denoiser
    text_keys_values = set(trainable_names(pipe, "attn2-kv"))
    deltas = [delta.float() for (owner, name), delta in patch_updates(pipe, patch).items()
              if owner == component and name in text_keys_values and delta.ndim == 2]
    if not deltas:
        raise ObliviateError("the patch changes no text key or value projection of the denoiser (attn2-kv): no "
                             "direction to read")
    _, _, vh = torch.linalg.svd(torch.cat(deltas), full_matrices=False)
    return vh[:min(rank, len(vh))]


def direction_memories(pipe, patch: Patch, cfg: DirectionAttackConfig, scale: float | None = None) \
        -> list[PromptMemory]:
    """``cfg.tries`` random memories inside the span of ``patch``'s strongest directions on ``pipe``, at
    ``scale`` per entry (default: the token embeddings' standard deviation, as a random memory of the full
    width would be)."""
    basis = strongest_directions(pipe, patch, cfg.rank)
    scale = token_embeddings(pipe).std().item() if scale is None else scale
    r, width = basis.shape
    gen = generator(cfg.seed, "direction-attack")
    gain = scale * (width / r) ** 0.5

    def draw() -> torch.Tensor:
        return torch.randn(cfg.tokens, r, generator=gen) @ basis * gain

    return [PromptMemory(draw(), draw()) for _ in range(cfg.tries)]
