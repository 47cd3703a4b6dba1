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
from .families import Conditioning, encode_ids, family_of, predict, text_encoders, token_embeddings, token_ids
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


@contextmanager
def installed(pipe, learned: LearnedTokens) -> Iterator[str]:
    """Swap in tokenizers and text encoders that know ``learned``; yields the phrase to put in prompts.

    Every text encoder of the family learns the tokens (a row of ``learned.embeddings`` is the encoders'
    rows side by side). The copies keep the pipeline itself unchanged (its fingerprint, its vocabulary)
    outside the block.
    """
    family = family_of(pipe)
    old = {name: getattr(pipe, name) for name in (*family.tokenizers, *family.text_encoders)}
    rows = learned.embeddings.split(_widths(pipe), -1)
    for name in family.tokenizers:
        tok = copy.deepcopy(old[name])
        tok.add_tokens(learned.tokens)
        setattr(pipe, name, tok)
    ids = pipe.tokenizer.convert_tokens_to_ids(learned.tokens)
    for name, part in zip(family.text_encoders, rows, strict=True):
        te = copy.deepcopy(old[name])
        te.resize_token_embeddings(len(pipe.tokenizer))
        with torch.no_grad():
            weight = te.get_input_embeddings().weight
            weight[ids] = part.to(weight.device, weight.dtype)
        setattr(pipe, name, te)
    try:
        yield learned.phrase
    finally:
        for name, part in old.items():
            setattr(pipe, name, part)


def _widths(pipe) -> list[int]:
    return [getattr(pipe, c).get_input_embeddings().weight.shape[1] for c in text_encoders(pipe)]


class TokenRows:
    """Encodes prompts with the embedding rows of ``names`` (tokens :func:`installed` added) given as a tensor,
    so gradients reach the rows and nothing else; the text encoders run functionally, their weights untouched."""

    def __init__(self, pipe, names: list[str]) -> None:
        self.pipe = pipe
        self.tables: dict[str, torch.Tensor] = {}
        for component in text_encoders(pipe):
            encoder = getattr(pipe, component)
            table = encoder.get_input_embeddings().weight
            name = next(n for n, p in encoder.named_parameters() if p is table)
            self.tables[f"{component}.{name}"] = table.detach()
        self.widths = _widths(pipe)
        self.device = next(iter(self.tables.values())).device
        self.ids = torch.tensor(pipe.tokenizer.convert_tokens_to_ids(names), device=self.device)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        return token_ids(self.pipe, prompts).to(self.device)

    def encode(self, ids: torch.Tensor, rows: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) \
            -> Conditioning:
        """The conditioning of ``ids`` (batch, length) with the new rows set to ``rows`` (and ``weights``: more
        text-encoder parameters to substitute, e.g. an edit of the encoder)."""
        tables = {name: table.index_put((self.ids.to(table.device),), part.to(table.device, table.dtype))
                  for (name, table), part in zip(self.tables.items(), rows.split(self.widths, -1), strict=True)}
        return encode_ids(self.pipe, ids, {**(weights or {}), **tables})


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
    emb = token_embeddings(pipe)
    init_ids = [i for w in (init_words or []) for i in pipe.tokenizer(w, add_special_tokens=False).input_ids]
    init = emb.mean(0, keepdim=True).repeat(cfg.n_tokens, 1) + randn((cfg.n_tokens, emb.shape[1]), gen, emb) * emb.std()
    for j, tid in enumerate(init_ids[:cfg.n_tokens // 2 or 1]):
        init[j] = emb[tid]
    learned = LearnedTokens(names, init.clone())
    with installed(pipe, learned) as phrase:
        rows_encoder = TokenRows(pipe, names)
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
