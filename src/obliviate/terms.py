"""The terms methods, attacks and keys share, written once: prompt helpers, the keep term, the ESD target and the
ordinary denoising loss. A method's file then reads as its objective: which of these it sums, on what.

* **Prompts.** A concept's words swapped for a phrase (UCE's guide, STEREO's and Lethe's anchors, the
  adversarial tokens of AdvUnlearn and of the attacks), ESD's training prompts, a category's single prompt
  (FMN), the positions of a concept's tokens, and prompts made of learned embeddings.
* **The keep term** (FMN's anchor, AdvUnlearn's retain term, Lethe's and a key's keep term): the edited model's
  output on the kept concepts' prompts, at their own images noised to t, distilled from the frozen model.
  One rule where images come from: the catalog's renderings, else the base model's own image of each kept
  concept, generated once (no method falls back to other points).
* **The ESD target** (ESD, STEREO, AdvUnlearn, the learnable prompt): x_t by partial sampling of the
  concept's prompt, and eps(∅) - eta (eps(c) - eps(∅)) from the frozen model there.
* **The denoising loss** (concept inversion, the key-learning attack, UnlearnDiffAtk, Lethe's adversaries):
  || f(x_t, y, t) - target(z0, eps, t) ||^2 on images of the concept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .bench import Concept
from .diffusion import (
    Predict,
    denoising_batch,
    images_to_latents,
    latent_shape,
    noised,
    partial_sample,
    predict_each,
    randint,
    randn,
    random_stop,
    random_timesteps,
    seed_stream,
    training_target,
)
from .errors import ObliviateError
from .families import Conditioning, encode, segments

# ------------------------------------------------------------------------------------------------------ prompts


def swap_words(prompt: str, words: tuple[str, ...] | list[str], phrase: str) -> str | None:
    """``prompt`` with the longest of ``words`` it contains replaced by ``phrase`` (every occurrence, spaces
    tidied), or None when it names none of them."""
    for word in sorted(words, key=len, reverse=True):
        if word in prompt:
            return " ".join(prompt.replace(word, phrase).split())
    return None


def swap(prompt: str, concept: Concept, phrase: str) -> str:
    """``prompt`` with ``concept``'s words replaced by ``phrase``; a prompt that does not name it is an error."""
    swapped = swap_words(prompt, concept.words, phrase)
    if swapped is None:
        raise ObliviateError(f"prompt {prompt!r} does not name {concept.name!r}")
    return swapped


def training_prompts(concept: Concept, train_on: str = "named") -> list[str]:
    """The concept by its own name (as ESD trains on "nudity" or an artist's name), with ``named`` also the
    catalog prompts that name it: prompts that reach it only through synonyms are left to the evaluation,
    which then measures generalisation, not memorisation."""
    named = [p for p in concept.prompts if concept.name in p.split()] if train_on == "named" else []
    return list(dict.fromkeys([concept.name, *named]))


def category_prompt(phrasing: dict[str, str], concept: Concept, phrase: str) -> str:
    """A category's one prompt: the bench's phrasing of the concept's category, else the paper's ("a photo in
    the style of X" for styles, "a photo of X" otherwise)."""
    own = phrasing.get(concept.category)
    if own is not None:
        return own.replace("{name}", phrase)
    return f"a photo in the style of {phrase}" if concept.category == "style" else f"a photo of {phrase}"


def token_positions(pipe, prompts: list[str], words: list[str], include_eot: bool = False) -> torch.Tensor:
    """(B, L) bool mask, over the conditioning's text positions, of the tokens spelling any of ``words`` in each
    prompt: in every tokenizer's segment (SD3: CLIP's and T5's).

    ``include_eot`` adds the *first* end-of-text token of each prompt; pads are never selected, even when
    the tokenizer pads with end-of-text as SD 1.x's does.
    """
    parts = segments(pipe)
    mask = torch.zeros(len(prompts), parts[-1].start + parts[-1].length, dtype=torch.bool)
    for part in parts:
        if part.tokenizer is not None:
            mask[:, part.start:part.start + part.length] = _positions(part.tokenizer, part.length, prompts, words,
                                                                      include_eot)
    return mask


def _positions(tokenizer, length: int, prompts: list[str], words: list[str], include_eot: bool) -> torch.Tensor:
    enc = tokenizer(prompts, padding="max_length", max_length=length, truncation=True)
    mask = torch.zeros(len(prompts), length, dtype=torch.bool)
    phrases = [tokenizer(w, add_special_tokens=False).input_ids for w in words]
    for b, ids in enumerate(enc.input_ids):
        first = int(tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id)  # CLIP's start token
        for phrase in phrases:
            n = len(phrase)
            for i in range(first, len(ids) - n + 1):
                if n and ids[i:i + n] == phrase:
                    mask[b, i:i + n] = True
        if not mask[b].any():
            raise ObliviateError(f"the tokenizer cannot find {' / '.join(map(repr, words))} in prompt {prompts[b]!r}")
        if include_eot:
            eot = ids.index(tokenizer.eos_token_id, 1) if tokenizer.eos_token_id in ids[1:] else None
            if eot is not None:
                mask[b, eot] = True
    return mask


def embedding_prompts(pipe, found: list[torch.Tensor], template: str = "a photo of {}") -> Conditioning:
    """Conditionings of ``template`` filled with each set of learned embedding rows in ``found`` (a text-encoder
    copy that knows them, e.g. the tokens concept inversion found against an edit)."""
    from .inversion import LearnedTokens, installed

    n = found[0].shape[0]
    names = [f"<found{i}_{j}>" for i in range(len(found)) for j in range(n)]
    with installed(pipe, LearnedTokens(names, torch.cat(found))):
        return encode(pipe, [template.format("".join(names[i * n:(i + 1) * n])) for i in range(len(found))])


# ---------------------------------------------------------------------------------------------------- keep term


@dataclass
class KeepBank:
    """The concepts an edit keeps: each prompt's conditioning, a clean latent of its own concept, its text and
    its concept's category."""

    cond: Conditioning
    latents: torch.Tensor
    prompts: list[str]
    categories: list[str]


def keep_bank(pipe, catalog, erased: list[Concept], names: tuple[str, ...] | None, seed: int) -> KeepBank | None:
    """Every prompt of the kept concepts that names no erased word, each with an image of its own concept: the
    catalog's renderings (one per prompt), or where the catalog renders none, the base model's image of the
    concept's first prompt (one per concept, generated in one batch: every prompt of a real bench would cost
    minutes)."""
    kept = catalog.keep(erased, names)
    words = {w for c in erased for w in c.words}
    pairs = [(k, p) for k in kept for p in k.prompts if not words & set(p.split())]
    if not pairs:
        return None
    if catalog.renders:
        images = {k.name: catalog.images(pipe, k, len(k.prompts), seed_stream(seed, f"keep/{k.name}"))
                  for k in kept}
    else:
        from .generation import generate, image_seeds

        shown = list(dict.fromkeys(k for k, _ in pairs))
        drawn = generate(pipe, [k.prompts[0] for k in shown], image_seeds(seed_stream(seed, "keep"), len(shown)),
                         catalog.sampler.steps, catalog.sampler.guidance, progress=False)
        images = {k.name: drawn[i:i + 1] for i, k in enumerate(shown)}
    seen: dict[str, int] = {}
    rows = []
    for k, _ in pairs:
        i = seen.get(k.name, 0)
        seen[k.name] = i + 1
        rows.append(images[k.name][i % len(images[k.name])])
    prompts = [p for _, p in pairs]
    return KeepBank(encode(pipe, prompts), images_to_latents(pipe, np.stack(rows)), prompts,
                    [k.category for k, _ in pairs])


@dataclass
class KeepRows:
    """One draw of the keep term: kept images noised to ``t`` and their prompts (bank rows ``k``)."""

    x: torch.Tensor
    t: torch.Tensor
    cond: Conditioning
    k: torch.Tensor


def keep_rows(bank: KeepBank, sched, n: int, gen: torch.Generator, *, t: torch.Tensor | None = None,
              k: torch.Tensor | None = None, near: torch.Tensor | None = None, share: float = 0.0) -> KeepRows:
    """``n`` bank rows (drawn uniformly unless ``k`` is given; a ``share`` of them from ``near`` instead), their
    images noised to ``t`` (drawn over the whole schedule unless given), in that order from ``gen``."""
    device = bank.latents.device
    if k is None:
        k = randint(len(bank.cond), n, gen, device)
    if near is not None:
        k = torch.where(torch.rand(n, generator=gen).to(device) < share, near[randint(len(near), n, gen, device)], k)
    if t is None:
        t = random_timesteps(sched, n, gen, device)
    return KeepRows(noised(sched, bank.latents[k], t, gen), t, bank.cond[k], k)


def distance(output: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """The squared distance every term of these methods minimises (in float32, whatever the model's dtype)."""
    return F.mse_loss(output.float(), goal.float())


# ---------------------------------------------------------------------------------------------------- ESD target


def negative_guidance(e_uncond: torch.Tensor, e_cond: torch.Tensor, eta: float) -> torch.Tensor:
    return e_uncond - eta * (e_cond - e_uncond)


def esd_point(pipe, draw: Predict, sampler, cond: Conditioning, uncond: Conditioning, gen: torch.Generator,
              guidance: float, include_last: bool = False, start: torch.Tensor | None = None) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """ESD's x_t: a random number of DDIM steps from noise (``start``, else drawn after the number of steps)
    under ``cond`` (guided by ``guidance``, drawn by ``draw``); returns (x_t, t)."""
    stop = random_stop(len(sampler.timesteps), gen, include_last)
    start = randn(latent_shape(pipe, len(cond)), gen, cond.states) if start is None else start
    with torch.no_grad():
        return partial_sample(draw, sampler, start, cond, uncond, stop, guidance)


@torch.no_grad()
def esd_target(frozen: Predict, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, uncond: Conditioning,
               eta: float, *also: tuple[torch.Tensor, torch.Tensor, Conditioning]) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """ESD's target at (x_t, t): eps(∅) - eta (eps(c) - eps(∅)) from the frozen model, with eps(∅), eps(c), and
    the frozen outputs of ``also`` (more groups, computed in the same call)."""
    e_uncond, e_cond, *more = predict_each(frozen, (x_t, t, uncond), (x_t, t, cond), *also)
    return negative_guidance(e_uncond, e_cond, eta), e_uncond, e_cond, more


# ----------------------------------------------------------------------------------------------- denoising loss


def denoising_loss(sched, latents: torch.Tensor, n: int, gen: torch.Generator,
                   denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The ordinary denoising loss on ``n`` of ``latents``: || denoise(x_t, t) - target(z0, eps, t) ||^2 (the
    conditioning is ``denoise``'s to choose, after the batch is drawn)."""
    z0, noise, t, x_t = denoising_batch(sched, latents, n, gen)
    return distance(denoise(x_t, t), training_target(sched, z0.float(), noise.float(), t))
