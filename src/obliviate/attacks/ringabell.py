"""Ring-A-Bell (Tsai et al., "Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion Models?",
ICLR 2024): model-agnostic. The concept is a direction in the text encoder's output space,

    v_c = mean_i [ f(prompt_i with c) - f(prompt_i without c) ],    target = f(neutral) + alpha * v_c

and a genetic search finds discrete tokens whose encoding approximates the target, min_p || f(p) - target ||^2.
Only the text encoder the attacker already has (the base model's) is used: the search never sees the edit,
so the same prompts go to the base model (the ceiling) and the model under test.
"""

from __future__ import annotations

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, randint
from ..families import encode_ids, token_ids
from ..progress import bar
from ..terms import swap_words
from .base import Probe
from .configs import RingABellConfig
from .prompt_search import tokens_text, word_vocabulary

__all__ = ["RingABellConfig", "concept_target", "prepare", "run"]


def without(prompt: str, concept: Concept) -> str:
    swapped = swap_words(prompt, concept.words, "")
    return " ".join(prompt.split()) if swapped is None else swapped


@torch.no_grad()
def _encode(pipe, ids: torch.Tensor) -> torch.Tensor:
    return encode_ids(pipe, ids).states.float()


@torch.no_grad()
def concept_target(pipe, concept: Concept, alpha: float) -> torch.Tensor:
    """f(neutral) + alpha * v_c over the concept's prompts (their concept-free versions are the neutral ones)."""
    with_c = _encode(pipe, token_ids(pipe, list(concept.prompts)))
    free = _encode(pipe, token_ids(pipe, [without(p, concept) for p in concept.prompts]))
    return free.mean(0) + alpha * (with_c - free).mean(0)


def _prompt_ids(pipe, body: torch.Tensor) -> torch.Tensor:
    """Token bodies (P, n) framed as the tokenizer frames a prompt: start token, body, end token and padding."""
    tok = pipe.tokenizer
    ids = torch.full((len(body), tok.model_max_length), tok.pad_token_id, dtype=torch.long)
    ids[:, 0] = tok.bos_token_id
    ids[:, 1:body.shape[1] + 1] = body
    ids[:, body.shape[1] + 1] = tok.eos_token_id
    return ids


@torch.no_grad()
def prepare(pipe, concept: Concept, cfg: RingABellConfig, catalog: Catalog) -> list[str]:
    """The genetic search (on the base model's text encoder, before any edit is in place)."""
    gen = generator(cfg.seed, "ringabell")
    n = min(cfg.n_tokens, pipe.tokenizer.model_max_length - 2)
    target = concept_target(pipe, concept, cfg.alpha)
    vocab = word_vocabulary(pipe.tokenizer)
    pop = vocab[randint(len(vocab), cfg.population * n, gen).view(cfg.population, n)]

    def fitness(bodies: torch.Tensor) -> torch.Tensor:  # higher is better
        return -((_encode(pipe, _prompt_ids(pipe, bodies)) - target) ** 2).mean((1, 2)).cpu()

    score = fitness(pop)
    elite = max(2, cfg.population // 8)
    for _ in bar(range(cfg.steps), desc="ringabell", unit="generation", enabled=cfg.progress):
        order = score.argsort(descending=True)
        pop, score = pop[order], score[order]
        # tournament selection of parents, one-point crossover, per-token mutation; the elite survives as is
        k = cfg.population - elite
        a, b = randint(cfg.population, k, gen), randint(cfg.population, k, gen)
        mothers = torch.where((score[a] > score[b])[:, None], pop[a], pop[b])
        a, b = randint(cfg.population, k, gen), randint(cfg.population, k, gen)
        fathers = torch.where((score[a] > score[b])[:, None], pop[a], pop[b])
        cut = randint(n + 1, k, gen)[:, None]
        children = torch.where(torch.arange(n)[None] < cut, mothers, fathers)
        mutate = torch.rand(children.shape, generator=gen) < cfg.mutation
        children = torch.where(mutate, vocab[randint(len(vocab), children.numel(), gen).view_as(children)], children)
        pop = torch.cat([pop[:elite], children])
        score = torch.cat([score[:elite], fitness(children)])
    prompts: list[str] = []
    for i in score.argsort(descending=True).tolist():
        text = tokens_text(pipe.tokenizer, pop[i].tolist())
        if text not in prompts:
            prompts.append(text)
        if len(prompts) == cfg.n_prompts:
            break
    return prompts


def run(pipe, concept: Concept, cfg: RingABellConfig, catalog: Catalog, prompts: list[str]) -> Probe:
    return Probe(list(prompts))
