"""Cross-attention (attn2) processors: capture attention to chosen tokens, append learnable prompt tokens.

The diffusers *processor* is the extension point: :func:`attn2_processors` swaps ours in for a ``with`` block
and puts the layers' own back afterwards, so the model class is untouched. What changes from one forward to
the next (which memory, which tokens to watch) travels in ``cross_attention_kwargs`` as an
:class:`AttnCall`, never by mutating a processor between forwards. Three defects of FMN's public code are
designed out: the token mask is per batch element (batch > 1 is correct); an empty capture is an error
(a processor silently replaced, e.g. by xformers, is not a zero loss); and "the end-of-text token" means
the first one only, not every ``<|endoftext|>`` pad of SD 1.x.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .diffusion import randn
from .errors import ObliviateError
from .methods.configs import PLACEMENTS


@dataclass
class PromptMemory:
    """``m`` learnable key/value tokens appended after the text tokens in attn2 (Bui et al.)."""

    keys: torch.Tensor    # (m, d_text)
    values: torch.Tensor  # (m, d_text)


def random_memory(tokens: int, width: int, scale: float, gen: torch.Generator, like: torch.Tensor) -> PromptMemory:
    """A memory of ``tokens`` Gaussian key/value rows at the token embeddings' ``scale`` (keys drawn first)."""
    return PromptMemory(randn((tokens, width), gen, like) * scale, randn((tokens, width), gen, like) * scale)


@dataclass
class AttnCall:
    """Per-forward state, passed as ``cross_attention_kwargs={"obliviate": AttnCall(...)}``.

    ``memory`` replaces the installed processors' own memory for this forward (None: no memory);
    ``token_mask`` (B, L) asks every attn2 layer to record the spatial queries' attention probabilities onto
    those text positions, collected in ``captured``.
    """

    memory: PromptMemory | None = None
    token_mask: torch.Tensor | None = None
    captured: list[torch.Tensor] = field(default_factory=list)

    def collected(self) -> torch.Tensor:
        """All captured probabilities, flattened and concatenated (FMN's loss is their L2 norm)."""
        if not self.captured:
            raise ObliviateError("no attention was captured: the attn2 processors were replaced "
                                 "(xformers or another processor?) or the model has no cross-attention")
        return torch.cat([p.reshape(-1) for p in self.captured])


def kwargs(call: AttnCall) -> dict:
    """The ``cross_attention_kwargs`` that carry ``call`` to the installed processors."""
    return {"obliviate": call}


class Attn2Processor:
    """attn2 with an optional prompt memory and optional capture of attention probabilities.

    Without capture it calls PyTorch's scaled-dot-product attention, exactly as diffusers' AttnProcessor2_0;
    with capture it computes the softmax explicitly (SDPA cannot return it) and records the probabilities
    of the spatial queries onto the masked token positions. The memory is appended only where
    ``memory_here`` (the placement); capture happens on every attn2 layer.
    """

    def __init__(self, memory: PromptMemory | None = None, memory_here: bool = True) -> None:
        self.memory = memory
        self.memory_here = memory_here

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 temb: torch.Tensor | None = None, obliviate: AttnCall | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ObliviateError("Attn2Processor installed on a self-attention layer")
        memory = (obliviate.memory if obliviate is not None else self.memory) if self.memory_here else None
        token_mask = obliviate.token_mask if obliviate is not None else None
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        text_len = encoder_hidden_states.shape[1]
        context = encoder_hidden_states
        key_in = value_in = context
        if memory is not None:
            mk = memory.keys.to(context).unsqueeze(0).expand(batch, -1, -1)
            mv = memory.values.to(context).unsqueeze(0).expand(batch, -1, -1)
            key_in = torch.cat([context, mk], 1)
            value_in = torch.cat([context, mv], 1)
        query = attn.to_q(hidden_states)
        key = attn.to_k(key_in)
        value = attn.to_v(value_in)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if token_mask is not None:
            scores = (query @ key.transpose(-1, -2)) * attn.scale
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = scores.float().softmax(-1)  # (B, heads, Q, L[+m])
            mask = token_mask.to(probs.device)
            if mask.shape != (batch, text_len):
                raise ObliviateError(f"token mask has shape {tuple(mask.shape)}, attention has batch {batch} "
                                     f"and {text_len} text tokens")
            # (B, heads, Q, L) -> for each batch element, only its own concept positions
            obliviate.captured.append(probs[..., :text_len].permute(0, 3, 1, 2)[mask])  # (n_selected, heads, Q)
            out = probs.to(value.dtype) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                 is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class _Passthrough:
    """Wraps a layer's own processor so it accepts (and ignores) obliviate's per-call state quietly."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 temb: torch.Tensor | None = None, obliviate: AttnCall | None = None, **kwargs) -> torch.Tensor:
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


BLOCK_PLACEMENTS = PLACEMENTS


def attn2_names(unet, placement: str = "all") -> list[str]:
    """Processor names of the cross-attention layers in ``placement`` (mid, mid+up or all blocks)."""
    if placement not in BLOCK_PLACEMENTS:
        raise ObliviateError(f"unknown placement {placement!r} (choose from {', '.join(BLOCK_PLACEMENTS)})")
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    if placement == "mid":
        names = [n for n in names if n.startswith("mid_block")]
    elif placement == "mid+up":
        names = [n for n in names if n.startswith(("mid_block", "up_blocks"))]
    if not names:
        raise ObliviateError(f"the UNet has no cross-attention layers in placement {placement!r}")
    return names


@contextmanager
def attn2_processors(unet, memory: PromptMemory | None = None, placement: str = "all") -> Iterator[list[str]]:
    """Install :class:`Attn2Processor` on every attn2 layer for the ``with`` block (``memory`` appended in
    ``placement``), then restore the layers' own processors. Yields the names of the memory's layers."""
    before = unet.attn_processors
    names = attn2_names(unet, placement)
    unet.set_attn_processor({n: Attn2Processor(memory, n in names) if n.endswith("attn2.processor")
                             else _Passthrough(p) for n, p in before.items()})
    try:
        yield names
    finally:
        unet.set_attn_processor(before)
