"""Cross-attention (attn2) processors: capture attention to chosen tokens, append learnable prompt tokens.

The diffusers *processor* is the extension point: we swap it on the attn2 modules only, so the model class
is untouched and ``restore`` puts the originals back. Three defects of FMN's public code are designed out:
the token mask is per batch element (batch > 1 is correct); installing is explicit and :class:`Capture`
refuses an empty capture (so a processor silently replaced, e.g. by xformers, is an error, not a zero loss);
and "the end-of-text token" means the first one only, not every ``<|endoftext|>`` pad of SD 1.x.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .errors import ObliviateError


@dataclass
class Capture:
    """Shared by every attn2 processor during one forward: which tokens to watch, and what was seen."""

    token_mask: torch.Tensor | None = None  # (B, L) bool over the text tokens; None = capture nothing
    probs: list[torch.Tensor] = field(default_factory=list)

    def reset(self, token_mask: torch.Tensor | None) -> None:
        self.token_mask = token_mask
        self.probs = []

    def collected(self) -> torch.Tensor:
        """All captured probabilities, flattened and concatenated (FMN's loss is their L2 norm)."""
        if not self.probs:
            raise ObliviateError("no attention was captured: the attn2 processors were replaced "
                                 "(xformers or another processor?) or the model has no cross-attention")
        return torch.cat([p.reshape(-1) for p in self.probs])


@dataclass
class PromptMemory:
    """``m`` learnable key/value tokens appended after the text tokens in attn2 (Bui et al.)."""

    keys: torch.Tensor    # (m, d_text)
    values: torch.Tensor  # (m, d_text)


class Attn2Processor:
    """attn2 with optional prompt-memory tokens and optional capture of attention probabilities.

    Without capture it calls PyTorch's scaled-dot-product attention, exactly as diffusers' AttnProcessor2_0;
    with capture it computes the softmax explicitly (SDPA cannot return it) and records the probabilities
    of the spatial queries onto the masked token positions.
    """

    def __init__(self, capture: Capture | None = None, memory: PromptMemory | None = None) -> None:
        self.capture = capture
        self.memory = memory

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ObliviateError("Attn2Processor installed on a self-attention layer")
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
        if self.memory is not None:
            mk = self.memory.keys.to(context).unsqueeze(0).expand(batch, -1, -1)
            mv = self.memory.values.to(context).unsqueeze(0).expand(batch, -1, -1)
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
        capture = self.capture
        if capture is not None and capture.token_mask is not None:
            scores = (query @ key.transpose(-1, -2)) * attn.scale
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = scores.softmax(-1)  # (B, heads, Q, L[+m])
            mask = capture.token_mask.to(probs.device)
            if mask.shape != (batch, text_len):
                raise ObliviateError(f"token mask has shape {tuple(mask.shape)}, attention has batch {batch} "
                                     f"and {text_len} text tokens")
            # (B, heads, Q, L) -> for each batch element, only its own concept positions
            selected = probs[..., :text_len].permute(0, 3, 1, 2)[mask]  # (n_selected, heads, Q)
            capture.probs.append(selected)
            out = probs @ value
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


BLOCK_PLACEMENTS = ("mid", "mid+up", "all")


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
def attn2_processors(unet, processor: Attn2Processor, placement: str = "all") -> Iterator[list[str]]:
    """Install ``processor`` on the attn2 layers of ``placement`` for the ``with`` block, then restore."""
    before = unet.attn_processors
    names = attn2_names(unet, placement)
    unet.set_attn_processor({n: (processor if n in names else p) for n, p in before.items()})
    try:
        yield names
    finally:
        unet.set_attn_processor(before)


def token_positions(tokenizer, prompts: list[str], words: list[str], include_eot: bool = False) -> torch.Tensor:
    """(B, L) bool mask of the tokens spelling any of ``words`` in each padded prompt.

    ``include_eot`` adds the *first* end-of-text token of each prompt; pads are never selected, even when
    the tokenizer pads with end-of-text as SD 1.x's does.
    """
    enc = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    mask = torch.zeros(len(prompts), tokenizer.model_max_length, dtype=torch.bool)
    phrases = [tokenizer(w, add_special_tokens=False).input_ids for w in words]
    for b, ids in enumerate(enc.input_ids):
        for phrase in phrases:
            n = len(phrase)
            for i in range(1, len(ids) - n + 1):
                if n and ids[i:i + n] == phrase:
                    mask[b, i:i + n] = True
        if not mask[b].any():
            raise ObliviateError(f"the tokenizer cannot find {' / '.join(map(repr, words))} in prompt {prompts[b]!r}")
        if include_eot:
            eot = ids.index(tokenizer.eos_token_id, 1) if tokenizer.eos_token_id in ids[1:] else None
            if eot is not None:
                mask[b, eot] = True
    return mask
