"""Textual inversion: learn new token embeddings that make the model draw the given images.

Used three ways: FMN's optional stage A (re-steer the concept's *visual* tokens), the inversion M-Score
(how much of the concept can still be recalled from a learned token) and the concept-inversion attack.
The learned tokens live in copies of the tokenizer and text encoder, so the model under test is never
changed: :func:`installed` swaps the copies in for the duration of a ``with`` block.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import generator, images_to_latents, randn, training_scheduler
from .errors import ObliviateError
from .families import Conditioning, encode_ids, family_of, predict, token_embeddings, token_ids
from .progress import bar
from .terms import denoising_loss


@dataclass
class InversionConfig:
    """FMN's public code: 4 tokens (two from the concept's words, two from noise), AdamW; we use a larger
    lr and batch than its 1e-3 / batch 1 / 500 steps so it fits seconds on a CPU."""

    n_tokens: int = 4
    steps: int = 150
    lr: float = 2e-2
    batch_size: int = 16
    template: str = "a photo of {}"
    seed: int = 0
    progress: bool = True


@dataclass
class LearnedTokens:
    tokens: list[str]
    embeddings: torch.Tensor  # (n_tokens, width), float32

    @property
    def phrase(self) -> str:
        return "".join(self.tokens)


def _token_names(tokenizer, n: int) -> list[str]:
    k = 0
    while any(f"<inv{k}_{i}>" in tokenizer.get_vocab() for i in range(n)):
        k += 1
    return [f"<inv{k}_{i}>" for i in range(n)]


def _tables(pipe, own: bool) -> list[tuple[str, str]]:
    """(text encoder, tokenizer) pairs whose embedding tables a learned token enters, in the order of a learned
    row's parts: the encoders that read the family's token ids, then (``own``) those with a vocabulary of their
    own that the pipeline has (SD3's and Flux's T5)."""
    family = family_of(pipe)
    pairs = list(zip(family.text_encoders, family.tokenizers, strict=True))
    if own:
        pairs += [(e, t) for e, t in zip(family.other_encoders, family.other_tokenizers, strict=True)
                  if getattr(pipe, e, None) is not None]
    return pairs


def own_vocabulary_tables(pipe) -> list[tuple[str, str, torch.Tensor]]:
    """(encoder, tokenizer, embedding table in float32, cut to the tokenizer's vocabulary) of each encoder with a
    vocabulary of its own that the pipeline has (SD3's and Flux's T5): the part of a row after the shared one."""
    out = []
    for encoder, tokenizer in _tables(pipe, own=True)[len(_tables(pipe, own=False)):]:
        table = getattr(pipe, encoder).get_input_embeddings().weight.detach().float()
        out.append((encoder, tokenizer, table[:len(getattr(pipe, tokenizer))]))
    return out


def _widths(pipe, pairs: list[tuple[str, str]]) -> list[int]:
    return [getattr(pipe, e).get_input_embeddings().weight.shape[1] for e, _ in pairs]


def row_width(pipe, own: bool = True) -> int:
    """The width of a learned token's row: every table it enters side by side (``own``: T5's too)."""
    return sum(_widths(pipe, _tables(pipe, own)))


@contextmanager
def installed(pipe, learned: LearnedTokens) -> Iterator[str]:
    """Swap in tokenizers and text encoders that know ``learned``; yields the phrase to put in prompts.

    Every text encoder that reads the family's token ids learns the tokens (a row of ``learned.embeddings`` is
    the encoders' rows side by side); rows as wide as :func:`row_width` also carry a part for each encoder with
    a vocabulary of its own (T5), whose tokenizer learns the tokens too; narrower rows leave T5 to spell the
    placeholder in its own pieces. The copies keep the pipeline itself unchanged (its fingerprint, its
    vocabulary) outside the block.
    """
    shared = _tables(pipe, own=False)
    pairs = _tables(pipe, own=learned.embeddings.shape[1] != sum(_widths(pipe, shared)))
    widths = _widths(pipe, pairs)
    if learned.embeddings.shape[1] != sum(widths):
        raise ObliviateError(f"learned token rows are {learned.embeddings.shape[1]} wide; this model's text encoders "
                             f"take {sum(_widths(pipe, shared))} (or {row_width(pipe)} with T5)")
    family = family_of(pipe)
    tokenizers = {t for _, t in pairs} | set(family.tokenizers)
    old = {name: getattr(pipe, name) for name in (*tokenizers, *(e for e, _ in pairs))}
    for name in tokenizers:
        tok = copy.deepcopy(old[name])
        tok.add_tokens(learned.tokens)
        setattr(pipe, name, tok)
    for (encoder, tokenizer), part in zip(pairs, learned.embeddings.split(widths, -1), strict=True):
        tok, te = getattr(pipe, tokenizer), copy.deepcopy(old[encoder])
        ids = tok.convert_tokens_to_ids(learned.tokens)
        rows = te.get_input_embeddings().weight.shape[0]
        te.resize_token_embeddings(max(len(tok), rows))  # T5 pads its table past its vocabulary: keep those rows
        with torch.no_grad():
            weight = te.get_input_embeddings().weight
            weight[ids] = part.to(weight.device, weight.dtype)
        setattr(pipe, encoder, te)
    try:
        yield learned.phrase
    finally:
        for name, part in old.items():
            setattr(pipe, name, part)


class TokenRows:
    """Encodes prompts with the embedding rows of ``names`` (tokens :func:`installed` added) given as a tensor,
    so gradients reach the rows and nothing else; the text encoders run functionally, their weights untouched.
    ``own``: the rows carry T5's part too (as wide as :func:`row_width`)."""

    def __init__(self, pipe, names: list[str], own: bool = False) -> None:
        self.pipe = pipe
        self.tables: dict[str, torch.Tensor] = {}
        self.ids: list[torch.Tensor] = []
        pairs = _tables(pipe, own)
        for component, tokenizer in pairs:
            encoder = getattr(pipe, component)
            table = encoder.get_input_embeddings().weight
            name = next(n for n, p in encoder.named_parameters() if p is table)
            self.tables[f"{component}.{name}"] = table.detach()
            self.ids.append(torch.tensor(getattr(pipe, tokenizer).convert_tokens_to_ids(names), device=table.device))
        self.widths = _widths(pipe, pairs)
        self.device = next(iter(self.tables.values())).device

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        return token_ids(self.pipe, prompts).to(self.device)

    def encode(self, ids: torch.Tensor, rows: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) \
            -> Conditioning:
        """The conditioning of ``ids`` (batch, length) with the new rows set to ``rows`` (and ``weights``: more
        text-encoder parameters to substitute, e.g. an edit of the encoder)."""
        tables = {name: table.index_put((at,), part.to(table.device, table.dtype))
                  for (name, table), at, part in zip(self.tables.items(), self.ids, rows.split(self.widths, -1),
                                                     strict=True)}
        return encode_ids(self.pipe, ids, {**(weights or {}), **tables})


def _start_rows(table: torch.Tensor, tokenizer, init_words: list[str] | None, n: int,
                gen: torch.Generator) -> torch.Tensor:
    """FMN's start: ``n`` rows at the table's mean plus noise of its spread, the first half replaced by the rows
    of the init words' tokens (their meaning is where the search begins)."""
    rows = table.mean(0, keepdim=True).repeat(n, 1) + randn((n, table.shape[1]), gen, table) * table.std()
    ids = [i for w in (init_words or []) for i in tokenizer(w, add_special_tokens=False).input_ids]
    for j, tid in enumerate(ids[:n // 2 or 1]):
        rows[j] = table[tid]
    return rows


def invert(pipe, images: np.ndarray, cfg: InversionConfig, init_words: list[str] | None = None) -> LearnedTokens:
    """Learn ``cfg.n_tokens`` embeddings on ``images`` with the ordinary denoising loss of the model under test.

    Only the new rows train, in float32 (the text encoder runs functionally on them), whatever the model's dtype.
    """
    if len(images) == 0:
        raise ObliviateError("textual inversion needs at least one image")
    gen = generator(cfg.seed)
    sched = training_scheduler(pipe)
    latents = images_to_latents(pipe, images)
    names = _token_names(pipe.tokenizer, cfg.n_tokens)
    parts = [_start_rows(token_embeddings(pipe), pipe.tokenizer, init_words, cfg.n_tokens, gen)]
    for _, tokenizer, table in own_vocabulary_tables(pipe):  # T5's part, drawn after
        parts.append(_start_rows(table, getattr(pipe, tokenizer), init_words, cfg.n_tokens, gen).to(parts[0].device))
    init = torch.cat(parts, -1)
    learned = LearnedTokens(names, init.clone())
    with installed(pipe, learned) as phrase:
        rows_encoder = TokenRows(pipe, names, own=True)
        rows = init.clone().to(rows_encoder.device).requires_grad_(True)
        opt = torch.optim.Adam([rows], lr=cfg.lr)
        ids = rows_encoder.token_ids([cfg.template.format(phrase)])
        for _ in bar(range(cfg.steps), desc="inversion", unit="step", enabled=cfg.progress):
            loss = denoising_loss(sched, latents, cfg.batch_size, gen, lambda x_t, t: predict(
                pipe, x_t, t, rows_encoder.encode(ids, rows).expand(cfg.batch_size)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        learned.embeddings = rows.detach().float().cpu()
    return learned
