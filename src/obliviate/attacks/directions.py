"""The patch-direction attack: read a public patch for where its keys might live, and try memories built there.

A key acts through every attn2 layer's ``to_k``/``to_v`` (a prompt memory is read by them; a LoRA key changes
them; on an MMDiT the joint attention's text keys and values, ``add_k_proj``/``add_v_proj``). If the public
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
from ..patch import Patch


@dataclass
class DirectionAttackConfig:
    rank: int = 8  # strongest directions the memories are built from
    tokens: int = 10
    tries: int = 100
    seed: int = 0


# where a key's memory is read: the text keys and values of a UNet's cross-attention and of an MMDiT's joint
# attention (its text stream's projections)
TEXT_KEYS_VALUES = (".attn2.to_k.", ".attn2.to_v.", ".attn.add_k_proj.", ".attn.add_v_proj.")


def strongest_directions(patch: Patch, rank: int) -> torch.Tensor:
    """The ``rank`` text-space directions (rows, unit norm) along which the patch's deltas of the text keys and
    values (attn2 ``to_k``/``to_v``; on an MMDiT ``add_k_proj``/``add_v_proj``) act most."""
    deltas = [t.float() for name, t in patch.tensors.items()  # weights (an MMDiT's projections have biases too)
              if name.startswith(("delta.unet.", "delta.transformer.")) and any(k in name for k in TEXT_KEYS_VALUES)
              and t.ndim == 2]
    if not deltas:
        raise ObliviateError("the patch changes no text key or value projection (attn2 to_k/to_v, add_k_proj/"
                             "add_v_proj): no direction to read")
    if len({d.shape[1] for d in deltas}) != 1:
        raise ObliviateError("the patch's text key/value deltas have different input widths")
    _, _, vh = torch.linalg.svd(torch.cat(deltas), full_matrices=False)
    return vh[:min(rank, len(vh))]


def direction_memories(patch: Patch, scale: float, cfg: DirectionAttackConfig) -> list[PromptMemory]:
    """``cfg.tries`` random memories inside the span of the patch's strongest directions, at ``scale`` per
    entry (the token embeddings' standard deviation), as a random memory of the full width would be."""
    basis = strongest_directions(patch, cfg.rank)
    r, width = basis.shape
    gen = generator(cfg.seed, "direction-attack")
    gain = scale * (width / r) ** 0.5

    def draw() -> torch.Tensor:
        return torch.randn(cfg.tokens, r, generator=gen) @ basis * gain

    return [PromptMemory(draw(), draw()) for _ in range(cfg.tries)]
