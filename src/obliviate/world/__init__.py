"""The embedded world: a procedural concept domain, a tiny Stable Diffusion trained on it, and a detector."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..errors import ObliviateError
from .domain import CATEGORY_CLASSES, Concept, concept_by_name, concepts

WEIGHTS = Path(__file__).parent / "weights"

# Fingerprint ids of worlds that are no longer shipped: a patch made on one is refused with its name.
RETIRED_WORLDS = {"c4b63148-bd9eb27d": "the embedded world v1 (replaced by v2: objects, styles and characters "
                                       "changed; make the patch again on the shipped world)"}


def world_dir() -> Path:
    """Folder of the shipped world (``pipeline/``, ``detector.safetensors``, ``world.json``)."""
    if not (WEIGHTS / "pipeline" / "model_index.json").is_file():
        raise ObliviateError(f"the shipped world is missing from {WEIGHTS}; rebuild it with "
                             f"`obliviate world build --out {WEIGHTS} --seed 0`")
    return WEIGHTS


@lru_cache(maxsize=1)
def world_info() -> dict:
    """Contents of ``world.json`` (concepts, generation defaults, how it was built)."""
    return json.loads((world_dir() / "world.json").read_text())


def world_fingerprint():
    """The shipped world's :class:`~obliviate.fingerprint.Fingerprint` (None if world.json has none)."""
    from ..fingerprint import Fingerprint

    data = world_info().get("fingerprint")
    return Fingerprint.from_dict(data) if data else None


def load_detector(path: Path | None = None):
    """The world's concept detector (a :class:`~obliviate.world.models.Detector` in eval mode)."""
    from .models import Detector

    return Detector.load(path or world_dir() / "detector.safetensors")


__all__ = ["CATEGORY_CLASSES", "Concept", "concept_by_name", "concepts", "load_detector", "world_dir",
           "world_fingerprint", "world_info"]
