"""Concept inversion (Pham et al., "Circumventing Concept Erasure Methods for Text-to-Image Generative Models",
ICLR 2024): learn new token embeddings on images of the concept against the model under test,

    v* = argmin_v  E_{x0 ~ images of c, t, eps} || eps_theta'(x_t, c(v), t) - eps ||^2

with c(v) the prompt "a photo of <v>", then ask for the concept with its words replaced by the tokens. An
erasure that only hid the concept's *name* comes back; one that removed the capacity does not.
"""

from __future__ import annotations

import numpy as np

from ..bench import Concept
from ..catalog import Catalog
from ..inversion import InversionConfig, invert
from ..terms import swap_words
from .base import Probe
from .configs import InversionAttackConfig

__all__ = ["InversionAttackConfig", "asking_with", "run"]


def asking_with(prompt: str, concept: Concept, phrase: str) -> str:
    """``prompt`` with the concept's words replaced by ``phrase`` (appended where it names none of them)."""
    swapped = swap_words(prompt, concept.words, phrase)
    return f"{prompt} {phrase}" if swapped is None else swapped


def run(pipe, concept: Concept, cfg: InversionAttackConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    learned = invert(pipe, images, InversionConfig(n_tokens=cfg.n_tokens, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed,
                                                   progress=cfg.progress))
    return Probe([asking_with(p, concept, learned.phrase) for p in concept.prompts], learned=learned)
