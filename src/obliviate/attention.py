"""Attention processors where text enters: capture attention to chosen tokens, append learnable prompt tokens.

On a UNet that is cross-attention (attn2, :class:`Attn2Processor`); on an MMDiT (SD3) the joint attention,
where the text stream's keys and values sit beside the image's (:class:`JointProcessor`).

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
        out = _attend(query, key, value, attn.scale, attention_mask, obliviate, token_mask, slice(None),
                      slice(0, text_len))
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float,
            attention_mask: torch.Tensor | None, call: AttnCall | None, token_mask: torch.Tensor | None,
            queries: slice, text: slice) -> torch.Tensor:
    """Softmax attention (B, heads, Q, d): PyTorch's SDPA, or with ``token_mask`` an explicit softmax (SDPA
    cannot return it) whose probabilities from the ``queries`` (the image's) onto the masked ``text`` positions
    are recorded in ``call.captured``, each batch element onto its own positions."""
    if token_mask is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                              is_causal=False)
    scores = (query @ key.transpose(-1, -2)) * scale
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.float().softmax(-1)  # (B, heads, Q, K)
    mask = token_mask.to(probs.device)
    text_len = text.stop - text.start
    if mask.shape != (len(query), text_len):
        raise ObliviateError(f"token mask has shape {tuple(mask.shape)}, attention has batch {len(query)} "
                             f"and {text_len} text tokens")
    # (B, heads, Q, L) -> (B, L, heads, Q), then each batch element's concept positions: (n_selected, heads, Q)
    call.captured.append(probs[:, :, queries, text].permute(0, 3, 1, 2)[mask])
    return probs.to(value.dtype) @ value


class JointProcessor:
    """Joint attention as diffusers computes it for an MMDiT (image and text tokens in one softmax, each stream
    with its own projections and q/k norms): SD3's ``JointAttnProcessor2_0`` (image tokens first) and Flux's
    double-stream ``FluxAttnProcessor`` (text first, rotary positions on every token). With an optional prompt
    memory appended to the text stream's keys and values (rows in the text stream's width, through
    ``add_k_proj`` / ``add_v_proj`` as a prompt's tokens are; unrotated, i.e. at Flux's text position 0) and an
    optional capture of the image queries' attention onto masked text positions."""

    def __init__(self, memory: PromptMemory | None = None, memory_here: bool = True, text_first: bool = False) -> None:
        self.memory = memory
        self.memory_here = memory_here
        self.text_first = text_first

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None, obliviate: AttnCall | None = None,
                 **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is None:
            raise ObliviateError("JointProcessor installed on an attention layer without a text stream")
        memory = (obliviate.memory if obliviate is not None else self.memory) if self.memory_here else None
        token_mask = obliviate.token_mask if obliviate is not None else None
        if memory is not None and attention_mask is not None:
            raise ObliviateError("a prompt memory cannot be appended where the joint attention has a mask")
        batch, n_image, n_text = len(hidden_states), hidden_states.shape[1], encoder_hidden_states.shape[1]
        head_dim = attn.to_k.out_features // attn.heads

        def heads(x: torch.Tensor, norm=None) -> torch.Tensor:  # (B, S, H, D)
            x = x.unflatten(-1, (-1, head_dim))
            return x if norm is None else norm(x)

        image = (heads(attn.to_q(hidden_states), attn.norm_q), heads(attn.to_k(hidden_states), attn.norm_k),
                 heads(attn.to_v(hidden_states)))
        context = encoder_hidden_states
        text = (heads(attn.add_q_proj(context), attn.norm_added_q), heads(attn.add_k_proj(context), attn.norm_added_k),
                heads(attn.add_v_proj(context)))
        first, second = (text, image) if self.text_first else (image, text)
        query, key, value = (torch.cat([a, b], 1) for a, b in zip(first, second, strict=True))
        if image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if memory is not None:
            def rows(m: torch.Tensor) -> torch.Tensor:
                return m.to(context).unsqueeze(0).expand(batch, -1, -1)

            key = torch.cat([key, heads(attn.add_k_proj(rows(memory.keys)), attn.norm_added_k)], 1)
            value = torch.cat([value, heads(attn.add_v_proj(rows(memory.values)))], 1)
        images, texts = (slice(n_text, n_text + n_image), slice(0, n_text)) if self.text_first else \
            (slice(0, n_image), slice(n_image, n_image + n_text))
        out = _attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), head_dim ** -0.5,
                      attention_mask, obliviate, token_mask, images, texts)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        image_out, text_out = out[:, images], out[:, texts]
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out.contiguous())
        return attn.to_out[1](attn.to_out[0](image_out.contiguous())), text_out


class _Passthrough:
    """Wraps a layer's own processor so it accepts (and ignores) obliviate's per-call state quietly."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 *args, temb: torch.Tensor | None = None, image_rotary_emb=None, obliviate: AttnCall | None = None,
                 **kwargs) -> torch.Tensor:
        # a layer passes on only the keywords this signature names (temb: a UNet's; rotary: Flux's, which passes
        # it by position too), so each is named here and handed on as it came
        given = {k: v for k, v in (("temb", temb), ("image_rotary_emb", image_rotary_emb)) if v is not None}
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **given, **kwargs)


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


def joint_names(model, placement: str = "all") -> list[str]:
    """Processor names of an MMDiT's joint attention layers in ``placement``: ``all`` blocks, the ``mid`` one,
    or ``mid+up`` (from the middle block on), the UNet placements' counterparts along the depth."""
    if placement not in BLOCK_PLACEMENTS:
        raise ObliviateError(f"unknown placement {placement!r} (choose from {', '.join(BLOCK_PLACEMENTS)})")
    names = [n for n in model.attn_processors if n.endswith(".attn.processor")
             and getattr(model.get_submodule(n[:-len(".processor")]), "add_k_proj", None) is not None]
    if not names:
        raise ObliviateError("the transformer has no joint attention layers")
    middle = len(names) // 2
    return {"all": names, "mid": names[middle:middle + 1], "mid+up": names[middle:]}[placement]


@contextmanager
def joint_processors(model, memory: PromptMemory | None = None, placement: str = "all",
                     text_first: bool = False) -> Iterator[list[str]]:
    """Install :class:`JointProcessor` on every joint attention layer (with a text stream of its own) for the
    ``with`` block (``memory`` in ``placement``), then restore the layers' own processors. Yields the names of
    the memory's layers."""
    before = model.attn_processors
    every, names = joint_names(model), joint_names(model, placement)
    model.set_attn_processor({n: JointProcessor(memory, n in names, text_first) if n in every else _Passthrough(p)
                              for n, p in before.items()})
    try:
        yield names
    finally:
        model.set_attn_processor(before)


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
