"""The embedded world: a procedural concept domain, a tiny Stable Diffusion trained on it, and a detector."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..errors import ObliviateError
from .domain import CATEGORY_CLASSES, Concept, concept_by_name, concepts

WEIGHTS = Path(__file__).parent / "weights"
WEIGHTS_SDXL = Path(__file__).parent / "weights_sdxl"
WEIGHTS_SD3 = Path(__file__).parent / "weights_sd3"
WEIGHTS_FLUX = Path(__file__).parent / "weights_flux"

# Fingerprint ids of worlds that are no longer shipped: a patch made on one is refused with its name.
RETIRED_WORLDS = {"c4b63148-bd9eb27d": "the embedded world v1 (replaced by v2: objects, styles and characters "
                                       "changed; make the patch again on the shipped world)"}


# The shipped worlds, one per model family, all on one domain and judged by one detector (the SD world's):
# --model name -> (family key, folder, the command that rebuilds it)
WORLDS: dict[str, tuple[str, Path, str]] = {
    "world": ("sd", WEIGHTS, f"obliviate world build --out {WEIGHTS} --seed 0"),
    "world-sdxl": ("sdxl", WEIGHTS_SDXL, f"obliviate world build --family sdxl --out {WEIGHTS_SDXL} --seed 0"),
    "world-sd3": ("sd3", WEIGHTS_SD3, f"obliviate world build --family sd3 --out {WEIGHTS_SD3} --seed 0 --threads 1"),
    "world-flux": ("flux", WEIGHTS_FLUX,
                   f"obliviate world build --family flux --out {WEIGHTS_FLUX} --seed 0 --threads 1"),
}


# the families ``obliviate world build --family`` trains a world of (each but sd: a module of this package with a
# build(); the SD world is the whole recipe)
BUILDABLE = ("sd", "sdxl", "sd3", "flux")


def world_dir(name: str = "world") -> Path:
    """Folder of a shipped world (``pipeline/``, ``world.json``; the SD world's also ``detector.safetensors``)."""
    if name not in WORLDS:
        raise ObliviateError(f"unknown world {name!r} (shipped: {', '.join(WORLDS)})")
    _, folder, rebuild = WORLDS[name]
    if not world_available(name):
        raise ObliviateError(f"the shipped {name} is missing from {folder}; rebuild it with `{rebuild}`")
    return folder


def world_available(name: str) -> bool:
    """Whether the world ``name`` is shipped in this install (its pipeline folder is there)."""
    return (WORLDS[name][1] / "pipeline" / "model_index.json").is_file()


@lru_cache(maxsize=4)
def world_info(name: str = "world") -> dict:
    """Contents of a world's ``world.json`` (concepts, generation defaults, how it was built)."""
    return json.loads((world_dir(name) / "world.json").read_text())


def world_fingerprint(name: str = "world"):
    """A shipped world's :class:`~obliviate.fingerprint.Fingerprint` (None if it is not shipped here)."""
    from ..fingerprint import Fingerprint

    if not world_available(name):
        return None
    data = world_info(name).get("fingerprint")
    return Fingerprint.from_dict(data) if data else None


def load_detector(path: Path | None = None):
    """The world's concept detector (a :class:`~obliviate.world.models.Detector` in eval mode)."""
    from .models import Detector

    return Detector.load(path or world_dir() / "detector.safetensors")


__all__ = ["BUILDABLE", "CATEGORY_CLASSES", "WORLDS", "Concept", "concept_by_name", "concepts", "load_detector",
           "world_available", "world_dir", "world_fingerprint", "world_info"]
