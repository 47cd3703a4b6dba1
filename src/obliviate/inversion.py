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
from .families import Conditioning, encode_ids, predict, token_ids
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
    """Swap in a tokenizer and text encoder that know ``learned``; yields the phrase to put in prompts.

    The copies keep the pipeline itself unchanged (its fingerprint, its vocabulary) outside the block.
    """
    old_tok, old_te = pipe.tokenizer, pipe.text_encoder
    tok = copy.deepcopy(old_tok)
    te = copy.deepcopy(old_te)
    tok.add_tokens(learned.tokens)
    te.resize_token_embeddings(len(tok))
    ids = tok.convert_tokens_to_ids(learned.tokens)
    with torch.no_grad():
        weight = te.get_input_embeddings().weight
        weight[ids] = learned.embeddings.to(weight.device, weight.dtype)
    pipe.tokenizer, pipe.text_encoder = tok, te
    try:
        yield learned.phrase
    finally:
        pipe.tokenizer, pipe.text_encoder = old_tok, old_te


class TokenRows:
    """Encodes prompts with the embedding rows of ``names`` (tokens :func:`installed` added) given as a tensor,
    so gradients reach the rows and nothing else; the text encoder runs functionally, its weights untouched."""

    def __init__(self, pipe, names: list[str]) -> None:
        self.pipe = pipe
        encoder = pipe.text_encoder
        table = encoder.get_input_embeddings()
        self.table_name = next(n for n, p in encoder.named_parameters() if p is table.weight)
        self.table = table.weight.detach()
        self.device = self.table.device
        self.ids = torch.tensor(pipe.tokenizer.convert_tokens_to_ids(names), device=self.device)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        return token_ids(self.pipe, prompts).to(self.device)

    def encode(self, ids: torch.Tensor, rows: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) \
            -> Conditioning:
        """The conditioning of ``ids`` (batch, length) with the new rows set to ``rows`` (and ``weights``: more
        text-encoder parameters to substitute, e.g. an edit of the encoder)."""
        table = self.table.index_put((self.ids,), rows.to(self.table.dtype))
        return encode_ids(self.pipe, ids, {**(weights or {}), self.table_name: table})


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
    emb = pipe.text_encoder.get_input_embeddings().weight.detach().float()
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
