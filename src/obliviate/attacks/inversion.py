"""Concept inversion (Pham et al., "Circumventing Concept Erasure Methods for Text-to-Image Generative Models",
ICLR 2024): learn new token embeddings on images of the concept against the model under test,

    v* = argmin_v  E_{x0 ~ images of c, t, eps} || eps_theta'(x_t, c(v), t) - eps ||^2

with c(v) the prompt "a photo of <v>", then ask for the concept with its words replaced by the tokens. An
erasure that only hid the concept's *name* comes back; one that removed the capacity does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bench import Concept
from ..catalog import Catalog
from ..inversion import InversionConfig, invert
from .base import Probe


@dataclass
class InversionAttackConfig:
    n_tokens: int = 4
    steps: int = 150
    lr: float = 2e-2
    anchors: int = 32  # images of the concept to invert
    images: str | None = None  # None: the catalog's (world renderings; a real model's generations), or a folder
    seed: int = 0
    progress: bool = True


def replace_concept(prompt: str, concept: Concept, phrase: str) -> str:
    """``prompt`` with the concept's words (longest first) replaced by ``phrase`` (appended if none is found)."""
    words = {*concept.words, "gory"} if concept.category == "unsafe" else set(concept.words)
    for word in sorted(words, key=len, reverse=True):
        if word in prompt:
            return prompt.replace(word, phrase)
    return f"{prompt} {phrase}"


def run(pipe, concept: Concept, cfg: InversionAttackConfig, catalog: Catalog, images: np.ndarray) -> Probe:
    learned = invert(pipe, images, InversionConfig(n_tokens=cfg.n_tokens, steps=cfg.steps, lr=cfg.lr, seed=cfg.seed,
                                                   progress=cfg.progress))
    return Probe([replace_concept(p, concept, learned.phrase) for p in concept.prompts], learned=learned)
