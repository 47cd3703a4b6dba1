"""Hard-prompt search, shared by UnlearnDiffAtk and P4D: optimise ``k`` prompt tokens by gradient while every
forward pass sees real vocabulary tokens (Wen et al., "Hard Prompts Made Easy", the projection both attacks use):

    e_proj = argmax_{w in V} cos(e, E_w),    e <- e - lr * grad_{e_proj} L(e_proj)

The continuous embeddings ``e`` carry the optimiser's state; the loss is always taken at their projection onto
the vocabulary, so the search ends with a plain text prompt that anyone can type, not an embedding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..diffusion import generator, randint, randn
from ..families import Conditioning, token_embeddings
from ..inversion import LearnedTokens, TokenRows, installed
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


def search_prompt(pipe, templates: list[str], n_tokens: int, objective: Objective, steps: int, lr: float,
                  seed: int, check_every: int = 10, score_draws: int = 4, progress: bool = True,
                  desc: str = "prompt search") -> str:
    """The ``n_tokens`` vocabulary tokens (as text) that minimise ``objective`` in ``templates`` (each a prompt with one
    ``{}`` where the tokens go). Every ``check_every`` steps the current projection is scored on ``score_draws``
    fixed draws of the objective's randomness (the same for every candidate) and the best one seen is kept: the
    training loss is too noisy to pick, and so is a single draw (it let filler words that drown the concept's
    own word win)."""
    gen = generator(seed)
    table = token_embeddings(pipe)
    vocab = word_vocabulary(pipe.tokenizer).to(table.device)
    unit = F.normalize(table[vocab], dim=-1)
    start = vocab[randint(len(vocab), n_tokens, gen, table.device)]
    rows = (table[start] + 0.1 * table.std() * randn((n_tokens, table.shape[1]), gen, table)).requires_grad_(True)
    names = [f"<adv_{i}>" for i in range(n_tokens)]
    best: tuple[float, list[int]] = (float("inf"), start.tolist())
    with installed(pipe, LearnedTokens(names, rows.detach().cpu())) as phrase:
        encoder = TokenRows(pipe, names)
        ids = encoder.token_ids([t.format(phrase) for t in templates])
        opt = torch.optim.AdamW([rows], lr=lr, weight_decay=0.1)

        def projected() -> tuple[torch.Tensor, list[int]]:
            chosen = vocab[(F.normalize(rows.detach(), dim=-1) @ unit.T).argmax(-1)]
            return table[chosen], chosen.tolist()

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
