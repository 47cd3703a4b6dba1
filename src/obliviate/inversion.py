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
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import ObliviateError
from .pipeline import Model


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
    embeddings: torch.Tensor  # (n_tokens, width)

    @property
    def phrase(self) -> str:
        return "".join(self.tokens)


def images_to_latents(model: Model, images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> scaled VAE latents (posterior means)."""
    vae = model.pipe.vae
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(vae.device, vae.dtype)
    with torch.no_grad():
        lat = torch.cat([vae.encode(x[i:i + 64]).latent_dist.mean for i in range(0, len(x), 64)])
    return lat * vae.config.scaling_factor


def _token_names(tokenizer, n: int) -> list[str]:
    k = 0
    while any(f"<inv{k}_{i}>" in tokenizer.get_vocab() for i in range(n)):
        k += 1
    return [f"<inv{k}_{i}>" for i in range(n)]


@contextmanager
def installed(model: Model, learned: LearnedTokens) -> Iterator[str]:
    """Swap in a tokenizer and text encoder that know ``learned``; yields the phrase to put in prompts."""
    pipe = model.pipe
    old_tok, old_te = pipe.tokenizer, pipe.text_encoder
    tok = copy.deepcopy(old_tok)
    te = copy.deepcopy(old_te)
    tok.add_tokens(learned.tokens)
    te.resize_token_embeddings(len(tok))
    ids = tok.convert_tokens_to_ids(learned.tokens)
    with torch.no_grad():
        te.get_input_embeddings().weight[ids] = learned.embeddings.to(te.dtype)
    pipe.tokenizer, pipe.text_encoder = tok, te
    try:
        yield learned.phrase
    finally:
        pipe.tokenizer, pipe.text_encoder = old_tok, old_te


def invert(model: Model, images: np.ndarray, cfg: InversionConfig, init_words: list[str] | None = None) \
        -> LearnedTokens:
    """Learn ``cfg.n_tokens`` embeddings on ``images`` with the ordinary noise-prediction loss."""
    if len(images) == 0:
        raise ObliviateError("textual inversion needs at least one image")
    pipe = model.pipe
    gen = torch.Generator().manual_seed(cfg.seed)
    latents = images_to_latents(model, images)
    base_tok = pipe.tokenizer
    names = _token_names(base_tok, cfg.n_tokens)
    emb = pipe.text_encoder.get_input_embeddings().weight.detach()
    init_ids = [i for w in (init_words or []) for i in base_tok(w, add_special_tokens=False).input_ids]
    init = emb.mean(0, keepdim=True).repeat(cfg.n_tokens, 1) + torch.randn(cfg.n_tokens, emb.shape[1],
                                                                               generator=gen) * emb.std()
    for j, tid in enumerate(init_ids[:cfg.n_tokens // 2 or 1]):
        init[j] = emb[tid]
    learned = LearnedTokens(names, init.clone())
    scheduler = pipe.scheduler
    alphas = scheduler.alphas_cumprod.to(latents.device)
    with installed(model, learned) as phrase:
        te = pipe.text_encoder
        ids_new = pipe.tokenizer.convert_tokens_to_ids(names)
        weight = te.get_input_embeddings().weight
        weight.requires_grad_(True)
        frozen = weight.detach().clone()
        opt = torch.optim.Adam([weight], lr=cfg.lr)
        text_ids = pipe.tokenizer([cfg.template.format(phrase)], padding="max_length",
                                  max_length=pipe.tokenizer.model_max_length, truncation=True,
                                  return_tensors="pt").input_ids.to(latents.device)
        mask = torch.zeros(weight.shape[0], 1, device=weight.device)
        mask[ids_new] = 1.0
        for _ in tqdm(range(cfg.steps), desc="inversion", disable=not cfg.progress, leave=False):
            idx = torch.randint(len(latents), (cfg.batch_size,), generator=gen)
            z0 = latents[idx]
            noise = torch.randn(z0.shape, generator=gen).to(z0)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen).to(z0.device)
            a = alphas[t].view(-1, 1, 1, 1)
            zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
            cond = te(text_ids.repeat(len(idx), 1)).last_hidden_state
            pred = pipe.unet(zt, t, cond).sample
            loss = F.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            weight.grad.mul_(mask)
            opt.step()
            with torch.no_grad():  # only the new rows may move
                weight.copy_(frozen * (1 - mask) + weight * mask)
        weight.requires_grad_(False)
        learned.embeddings = weight.detach()[ids_new].clone()
    return learned
