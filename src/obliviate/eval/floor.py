"""Chance floor: how often the base model draws a concept from its own prompts with the concept's words taken out.

Why: an erasure that removes what a word means, without steering away, cannot push a concept's M-Score below the
rate at which the rest of its prompt draws the concept anyway; an efficacy is only readable above that floor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..bench import Concept, Sampler
from .metrics import wilson_interval
from .mscore import generate_concepts, m_scores


def without_words(text: str, words: tuple[str, ...]) -> str:
    """``text`` with ``words`` taken out and its articles mended ("an outlined drawing" -> "a drawing")."""
    pattern = r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b"
    out = re.sub(r"\s+", " ", re.sub(pattern, "", text, flags=re.IGNORECASE)).strip()
    out = re.sub(r"\ban\b(?!\s*[aeiouAEIOU])", "a", out)
    return re.sub(r"\ba (?=[aeiouAEIOU])", "an ", out)


def floor_prompts(concept: Concept) -> tuple[str, ...]:
    """The concept's prompts without any word that names it."""
    return tuple(without_words(p, concept.words) for p in concept.prompts)


@dataclass
class Floor:
    """A concept's chance floor: M-Score of the base model on its word-less prompts, with a 95% interval."""

    concept: str
    m: float
    interval: tuple[float, float]
    n_images: int
    prompts: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"concept": self.concept, "m": self.m, "interval": list(self.interval), "n_images": self.n_images,
                "prompts": list(self.prompts)}


def chance_floors(pipe, concepts: list[Concept], detector, n: int, seed: int, sampler: Sampler,
                  progress: bool = True) -> list[Floor]:
    """Every concept's floor, from ``n`` images each (same seeds as an evaluation of the concept)."""
    stripped = [replace(c, prompts=floor_prompts(c)) for c in concepts]
    scores = m_scores(detector, generate_concepts(pipe, stripped, n, seed, sampler, progress=progress,
                                                        desc="floor images"))
    return [Floor(c.name, scores[c.name], wilson_interval(scores[c.name], n), n, c.prompts) for c in stripped]


def format_floors(floors: list[Floor]) -> str:
    """A Markdown table: each concept's floor, its interval, images and the prompts it was measured on."""
    lines = ["| concept | floor | 95% interval | images | prompts without the concept's words |",
             "|---|---|---|---|---|"]
    lines += [f"| {f.concept} | {f.m:.3f} | [{f.interval[0]:.3f}, {f.interval[1]:.3f}] | {f.n_images} | "
              + "; ".join(repr(p) for p in f.prompts) + " |" for f in floors]
    return "\n".join(lines)
