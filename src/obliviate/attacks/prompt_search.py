"""Hard-prompt search, shared by UnlearnDiffAtk and P4D: optimise ``k`` prompt tokens by gradient while every
forward pass sees real vocabulary tokens (Wen et al., "Hard Prompts Made Easy", the projection both attacks use):

    e_proj = argmax_{w in V} cos(e, E_w),    e <- e - lr * grad_{e_proj} L(e_proj)

The continuous embeddings ``e`` carry the optimiser's state; the loss is always taken at their projection onto
the vocabulary, so the search ends with a plain text prompt that anyone can type, not an embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..diffusion import generator, randint, randn
from ..families import Conditioning, token_embeddings
from ..inversion import LearnedTokens, TokenRows, installed, own_vocabulary_tables
from ..progress import bar

# loss(cond, gen): ``cond`` holds one encoded prompt per template (its placeholder filled with the projected
# tokens); ``gen`` draws the loss's randomness (a fixed generator when candidates are compared)
Objective = Callable[[Conditioning, torch.Generator], torch.Tensor]


_VOCABULARIES: dict[tuple[str, int], torch.Tensor] = {}


def word_vocabulary(tokenizer) -> torch.Tensor:
    """Ids of the tokens a prompt can spell: whole words whose printed text tokenizes back to the same single
    token (no special tokens, no byte fragments), so the prompt the search ends with means what it found."""
    key = (tokenizer.name_or_path, len(tokenizer))
    if key not in _VOCABULARIES:
        special = set(tokenizer.all_special_ids)
        ids = sorted(i for tok, i in tokenizer.get_vocab().items() if tok.endswith("</w>") and i not in special)
        texts = [tokenizer.decode([i]).strip() for i in ids]
        back = tokenizer(texts, add_special_tokens=False).input_ids
        _VOCABULARIES[key] = torch.tensor([i for i, t, b in zip(ids, texts, back, strict=True)
                                           if t.isprintable() and b == [i]])
    return _VOCABULARIES[key]


def tokens_text(tokenizer, ids: list[int]) -> str:
    return " ".join(tokenizer.decode([i]).strip() for i in ids)


class SearchSpace(NamedTuple):
    ids: torch.Tensor  # the words the search may pick, as ids of the family's tokenizer
    rows: torch.Tensor  # their rows, (words, width)
    spread: torch.Tensor  # the tables' spread per column, (width,): the scale of the start's noise
    own: bool  # the rows carry a part for an encoder with a vocabulary of its own (T5)


def search_space(pipe) -> SearchSpace:
    """The words a hard prompt may be spelled with, and their rows.

    A row is the word's row in every table a prompt's tokens enter: the family's encoders side by side and, where
    the pipeline has an encoder with a vocabulary of its own (SD3's and Flux's T5), that encoder's row of the same
    word, so the search conditions T5 as the prompt it ends with will (words T5 does not spell as one token are
    left out; without this T5 read the placeholders' pieces during the search and the words only afterwards)."""
    table = token_embeddings(pipe)
    vocab = word_vocabulary(pipe.tokenizer).to(table.device)
    rows, spread = [table[vocab]], [table.std().expand(table.shape[1])]
    keep = torch.ones(len(vocab), dtype=torch.bool, device=table.device)
    own_tables = own_vocabulary_tables(pipe)
    texts = [pipe.tokenizer.decode([i]).strip() for i in vocab.tolist()] if own_tables else []
    for _, tokenizer, own in own_tables:
        pieces = getattr(pipe, tokenizer)(texts, add_special_tokens=False).input_ids
        keep &= torch.tensor([len(p) == 1 for p in pieces], device=table.device)
        rows.append(own.to(table.device)[torch.tensor([p[0] if p else 0 for p in pieces], device=table.device)])
        spread.append(own.std().to(table.device).expand(own.shape[1]))
    return SearchSpace(vocab[keep], torch.cat(rows, -1)[keep], torch.cat(spread), bool(own_tables))


def search_prompt(pipe, templates: list[str], n_tokens: int, objective: Objective, steps: int, lr: float,
                  seed: int, check_every: int = 10, score_draws: int = 4, progress: bool = True,
                  desc: str = "prompt search") -> str:
    """The ``n_tokens`` vocabulary tokens (as text) that minimise ``objective`` in ``templates`` (each a prompt with one
    ``{}`` where the tokens go). Every ``check_every`` steps the current projection is scored on ``score_draws``
    fixed draws of the objective's randomness (the same for every candidate) and the best one seen is kept: the
    training loss is too noisy to pick, and so is a single draw (it let filler words that drown the concept's
    own word win)."""
    gen = generator(seed)
    vocab, table, spread, own = search_space(pipe)
    unit = F.normalize(table, dim=-1)
    start = randint(len(vocab), n_tokens, gen, table.device)
    rows = (table[start] + 0.1 * spread * randn((n_tokens, table.shape[1]), gen, table)).requires_grad_(True)
    names = [f"<adv_{i}>" for i in range(n_tokens)]
    best: tuple[float, list[int]] = (float("inf"), vocab[start].tolist())
    with installed(pipe, LearnedTokens(names, rows.detach().cpu())) as phrase:
        encoder = TokenRows(pipe, names, own=own)
        ids = encoder.token_ids([t.format(phrase) for t in templates])
        opt = torch.optim.AdamW([rows], lr=lr, weight_decay=0.1)

        def projected() -> tuple[torch.Tensor, list[int]]:
            chosen = (F.normalize(rows.detach(), dim=-1) @ unit.T).argmax(-1)
            return table[chosen], vocab[chosen].tolist()

        def score(chosen_rows: torch.Tensor) -> float:
            with torch.no_grad():
                cond = encoder.encode(ids, chosen_rows)
                return sum(float(objective(cond, generator(seed, f"compare{i}"))) for i in range(score_draws))

        for step in bar(range(steps), desc=desc, unit="step", enabled=progress):
            hard, chosen = projected()
            if step % check_every == 0:
                best = min(best, (score(hard), chosen))
            hard = hard.requires_grad_(True)
            loss = objective(encoder.encode(ids, hard), gen)
            (grad,) = torch.autograd.grad(loss, hard)
            rows.grad = grad  # straight through: the gradient at the projection moves the continuous rows
            opt.step()
        hard, chosen = projected()
        best = min(best, (score(hard), chosen))
    return tokens_text(pipe.tokenizer, best[1])
