"""The seam between obliviate and a model: what methods, attacks, keys, generation and evaluation may ask of it.

A family answers, for its pipelines: how prompts become a :class:`Conditioning` (the text states plus whatever
else the denoiser reads: a pooled embedding, time ids), how the denoiser is called (:func:`predict`, one call),
which layers text enters through (:func:`text_layers`: the projections that read the text states), which
named parameter sets an edit may train, and how attention processors are installed. Methods never name a
family: they call the functions here, which ask :func:`family_of` the pipeline. Adding a family (SDXL, SD3,
Flux) is one module that implements :class:`Family`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from ..errors import ObliviateError

__all__ = ["Conditioning", "Family", "Segment", "call_options", "component_weights", "denoiser", "encode",
           "encode_ids", "family_of", "pooled_layers", "predict", "prompt_call", "segments", "text_encoders",
           "text_layers", "text_width", "token_embeddings", "token_ids", "trainable_names"]


@dataclass(frozen=True)
class Conditioning:
    """What the denoiser is conditioned on, batch first in every tensor: the text states it attends to and
    what a family adds (SDXL's pooled embedding and time ids). Indexing, ``expand``, ``cat`` and ``where`` act
    on every tensor alike, so a method handles a batch of conditionings as it would one tensor."""

    states: torch.Tensor  # (B, L, d)
    pooled: torch.Tensor | None = None  # (B, d')
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, ...) each

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
        return Conditioning(fn(self.states), None if self.pooled is None else fn(self.pooled),
                            {k: fn(v) for k, v in self.extra.items()})

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, index: Any) -> Conditioning:
        return self._map(lambda t: t[index])

    def expand(self, n: int) -> Conditioning:
        """A batch of ``n`` copies of a one-row conditioning (views, as ``Tensor.expand``)."""
        return self._map(lambda t: t.expand(n, *t.shape[1:]))

    def repeat(self, n: int) -> Conditioning:
        return self._map(lambda t: t.repeat(n, *[1] * (t.ndim - 1)))

    def to(self, *args, **kwargs) -> Conditioning:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Conditioning:
        return self._map(torch.Tensor.detach)

    @property
    def device(self) -> torch.device:
        return self.states.device

    @property
    def dtype(self) -> torch.dtype:
        return self.states.dtype

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        first = items[0]
        return Conditioning(torch.cat([c.states for c in items]),
                            None if first.pooled is None else torch.cat([c.pooled for c in items]),
                            {k: torch.cat([c.extra[k] for c in items]) for k in first.extra})

    @staticmethod
    def where(mask: torch.Tensor, a: Conditioning, b: Conditioning) -> Conditioning:
        """Row i of ``a`` where ``mask[i]``, else of ``b``."""
        def pick(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.where(mask.to(x.device).view(-1, *[1] * (x.ndim - 1)), x, y)

        return Conditioning(pick(a.states, b.states), None if a.pooled is None else pick(a.pooled, b.pooled),
                            {k: pick(a.extra[k], b.extra[k]) for k in a.extra})

    def with_states(self, states: torch.Tensor) -> Conditioning:
        return replace(self, states=states)


@dataclass(frozen=True)
class Segment:
    """A run of the conditioning's text positions one tokenizer spells: SD's one CLIP segment; SD3's CLIP
    segment then T5's (``tokenizer`` None where the pipeline has no T5 and the positions are zeros)."""

    start: int
    length: int
    tokenizer: Any


class Family(Protocol):
    """One model family: the pipelines it serves and the seam's functions for them."""

    key: str  # "sd", "sdxl": what a patch records, so one made for another family is refused by name
    name: str
    pipeline_classes: tuple[str, ...]
    denoiser: str  # the pipeline component that denoises ("unet", "transformer")
    objective: str  # "denoising" (DDPM noising) or "flow" (flow matching): see obliviate.diffusion
    text_encoders: tuple[str, ...]  # the text encoders that read the family's token ids, in state order
    tokenizers: tuple[str, ...]  # their tokenizers; the first one's ids are the family's token ids
    other_encoders: tuple[str, ...]  # encoders with a vocabulary of their own (SD3's T5), optional in a pipeline
    other_tokenizers: tuple[str, ...]  # their tokenizers

    def accepts(self, pipe) -> bool: ...

    def check(self, pipe) -> None: ...

    def token_ids(self, pipe, prompts: list[str]) -> torch.Tensor: ...

    def segments(self, pipe) -> list[Segment]: ...

    def encode_ids(self, pipe, ids: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> Conditioning: ...

    def predict(self, forward: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                attention: Any = None) -> torch.Tensor: ...

    def latent_shape(self, pipe, batch: int) -> tuple[int, int, int, int]: ...

    def prompt_call(self, pipe, prompts: list[str]) -> dict: ...

    def call_options(self, pipe) -> dict: ...

    def sampler_options(self, pipe, steps: int) -> dict: ...

    def text_width(self, model) -> int: ...

    def text_layers(self, model) -> list[str]: ...

    def pooled_layers(self, model) -> dict[str, slice]: ...

    def trainable_names(self, model, which: str) -> list[str]: ...

    def attention(self, model, memory: Any = None, placement: str = "all") -> Any: ...

    def img2img(self, pipe) -> Any: ...


def _families() -> list[Family]:
    import importlib

    from . import FAMILIES

    return [importlib.import_module(f"{__package__}.{module}").FAMILY for _, _, module in FAMILIES.values()]


def family_of(pipe) -> Family:
    """The family of ``pipe``; refuses, in one line that names the supported families, a pipeline none serves."""
    known = getattr(pipe, "_obliviate_family", None)
    if known is not None:
        return known
    for family in _families():
        if family.accepts(pipe):
            family.check(pipe)
            pipe._obliviate_family = family
            return family
    from . import supported

    raise ObliviateError(f"{type(pipe).__name__} is not a pipeline obliviate supports: {supported()}")


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's denoising network (its UNet or transformer)."""
    return getattr(pipe, family_of(pipe).denoiser)


def token_ids(pipe, prompts: list[str]) -> torch.Tensor:
    """Token ids of ``prompts`` as the family's text encoder reads them (padded)."""
    return family_of(pipe).token_ids(pipe, prompts)


def segments(pipe) -> list[Segment]:
    """The conditioning's text positions, per tokenizer that spells them (where a word's tokens sit)."""
    return family_of(pipe).segments(pipe)


def encode_ids(pipe, ids: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> Conditioning:
    """The conditioning of token ids; ``weights`` overrides text-encoder parameters for this call (learned
    token rows, an edit of the encoder; named ``<component>.<parameter>``, e.g. ``text_encoder_2.…``), so
    gradients reach them and the encoders themselves are never written."""
    return family_of(pipe).encode_ids(pipe, ids, weights)


def component_weights(weights: dict[str, torch.Tensor] | None, component: str) -> dict[str, torch.Tensor]:
    """The entries of ``weights`` for ``component``, named as its own parameters."""
    prefix = f"{component}."
    return {k[len(prefix):]: v for k, v in (weights or {}).items() if k.startswith(prefix)}


def text_encoders(pipe) -> list[str]:
    """The pipeline's text encoders (component names), in the order their states are concatenated."""
    return list(family_of(pipe).text_encoders)


def token_embeddings(pipe) -> torch.Tensor:
    """Every text encoder's token embedding table side by side, (vocabulary, sum of widths), float32: one row
    per token is what a learned token is (it splits back per encoder where it is installed)."""
    tables = [getattr(pipe, c).get_input_embeddings().weight.detach().float() for c in text_encoders(pipe)]
    return torch.cat([t.to(tables[0].device) for t in tables], -1)


def text_width(pipe) -> int:
    """The width of the text the denoiser attends to, where a prompt memory's rows live: the text states on a UNet
    (cross_attention_dim), the text stream inside the joint blocks on an MMDiT."""
    family = family_of(pipe)
    return family.text_width(getattr(pipe, family.denoiser))


def encode(pipe, prompts: list[str]) -> Conditioning:
    """The conditioning of ``prompts``, on the denoiser's device and in its dtype (no gradient)."""
    with torch.no_grad():
        return encode_ids(pipe, token_ids(pipe, prompts))


def predict(pipe, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, *, forward: Callable | None = None,
            attention: Any = None) -> torch.Tensor:
    """The denoiser's output at (x_t, t) under ``cond``: its own weights, or ``forward`` (a functional call with
    edited weights); ``attention`` is per-call state for installed attention processors."""
    family = family_of(pipe)
    return family.predict(forward or getattr(pipe, family.denoiser), x_t, t, cond, attention)


def text_layers(pipe) -> list[str]:
    """Parameter names of the denoiser's projections that read the text states (SD: every attn2 to_k, to_v)."""
    family = family_of(pipe)
    return family.text_layers(getattr(pipe, family.denoiser))


def pooled_layers(pipe) -> dict[str, slice]:
    """Parameter names of the denoiser's projections that read the pooled text embedding, and the columns that
    read it (SDXL: the added time embedding's first linear; SD: none)."""
    family = family_of(pipe)
    return family.pooled_layers(getattr(pipe, family.denoiser))


def trainable_names(pipe, which: str, component: str | None = None) -> list[str]:
    """Parameters a named set selects in ``component`` (default: the denoiser)."""
    family = family_of(pipe)
    return family.trainable_names(getattr(pipe, component or family.denoiser), which)


def prompt_call(pipe, prompts: list[str]) -> dict:
    """The pipeline-call arguments that give the family's pipelines ``prompts`` as the seam means them (SDXL's
    empty prompt: its zero conditioning, which a pipeline given the string would not use)."""
    with torch.no_grad():
        return family_of(pipe).prompt_call(pipe, prompts)


def call_options(pipe) -> dict:
    """Arguments the family's pipelines are called with so that they sample what the conditioning describes
    (SD3 / Flux: the T5 length)."""
    return family_of(pipe).call_options(pipe)


def img2img(pipe):
    """The family's image-to-image pipeline on ``pipe``'s own components (diffusion completion runs it)."""
    img2img = family_of(pipe).img2img(pipe)
    img2img.set_progress_bar_config(disable=True)
    return img2img


def attention(pipe, memory: Any = None, placement: str = "all") -> Iterator[Any]:
    """Install the family's attention processors (capture, prompt memory) for a ``with`` block."""
    family = family_of(pipe)
    return family.attention(getattr(pipe, family.denoiser), memory, placement)
