"""Whether a model decides a concept in its noisiest sampler steps, read from the model alone (no detector).

An erasure that forgets only part of the noise schedule leaves the concept to the rest: a concept the model still
reads in an image noised to 0.9 of the schedule (a colour, gore) is decided before a forget range ending at 0.7
acts, and comes back. The probe asks the denoiser how much the concept's words change its prediction on the
model's own images of the concept, against images of its anchor (the same prompts with the concept's words
removed), at noise level tau:

    rho(tau) = E || f(x_tau^c, y_c) - f(x_tau^c, y_a) ||^2  /  E || f(x_tau^a, y_c) - f(x_tau^a, y_a) ||^2

with x^c the model's images for the concept's prompts y_c, x^a its images for the anchors y_a (same seeds), both
noised with the same draws. rho > 1 at tau = 0.9: the words act more on images of the concept than on images
without it, so the noised image still carries the concept there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .bench import Concept
from .catalog import Catalog
from .diffusion import generator, images_to_latents, randn, seed_stream, timestep_at, training_scheduler
from .errors import ObliviateError
from .families import Conditioning, encode, predict
from .generation import generate, image_seeds
from .terms import swap, training_prompts

LEVEL = 0.9  # the noisiest level the defaults' forget range (t <= 0.7) leaves out and early concepts survive to
EARLY = 1.0  # rho above this at LEVEL: the words act more on the concept's noised images than on its anchor's


@torch.no_grad()
def prompt_contrast(pipe, concept: Concept, catalog: Catalog, *, level: float = LEVEL, n: int = 32, draws: int = 4,
                    seed: int = 0) -> float:
    """rho(level) for ``concept`` on ``pipe`` from ``n`` images of each side and ``draws`` noise draws each."""
    named = [p for p in training_prompts(concept) if swap(p, concept, "").strip()]  # prompts that have an anchor
    if not named:
        raise ObliviateError(f"concept {concept.name!r} has no prompt that names it inside a sentence")
    prompts = [named[i % len(named)] for i in range(n)]
    anchors = [swap(p, concept, "").strip() for p in prompts]
    seeds, steps, guidance = image_seeds(seed_stream(seed, f"decided/{concept.name}"), n), \
        catalog.sampler.steps, catalog.sampler.guidance
    sides = [images_to_latents(pipe, generate(pipe, drawn, seeds, steps, guidance, progress=False))
             for drawn in (prompts, anchors)]
    sched, gen = training_scheduler(pipe), generator(seed, f"decided/{concept.name}/noise")
    t = torch.full((n,), timestep_at(sched, level), dtype=torch.long, device=sides[0].device)
    y = Conditioning.cat([encode(pipe, prompts), encode(pipe, anchors)])
    effect = [0.0, 0.0]
    for _ in range(draws):
        noise = randn(tuple(sides[0].shape), gen, sides[0])  # the same draw on both sides
        for k, latents in enumerate(sides):
            x = sched.add_noise(latents, noise, t)
            out = predict(pipe, torch.cat([x, x]), torch.cat([t, t]), y).float()
            effect[k] += float(((out[:n] - out[n:]) ** 2).mean())
    return effect[0] / effect[1]


def decided_early(pipe, concepts: Sequence[Concept], catalog: Catalog, seed: int = 0) -> dict[str, float]:
    """rho at :data:`LEVEL` for each concept (a concept with rho above :data:`EARLY` is decided in the noisiest
    steps)."""
    return {c.name: round(prompt_contrast(pipe, c, catalog, seed=seed), 4) for c in concepts}
