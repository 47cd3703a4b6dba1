"""Oracle worlds: the world retrained by its own recipe and seed with every training scene that shows some concepts
left out. This is exact unlearning (what training would have produced had the concepts never been in the data),
the yardstick no published erasure on Stable Diffusion can be held to.

An oracle keeps the shipped world's tokenizer (the concept's word exists and means nothing), VAE and detector, so
every figure measured on it compares with the world's. It is a plain diffusers folder whose ``obliviate.json``
names the world as its base and the concepts it never saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from ..errors import ObliviateError
from ..files import DERIVED_FILE, cache_root, oracle_without
from ..io import atomic_dir
from . import domain

SHIPPED = Path(__file__).parent / "oracles"


def oracle_name(without: Sequence[str]) -> str:
    """The folder name of the oracle without ``without``: 'striped+zorvik'."""
    return "+".join(sorted(without))


def check_without(without: Sequence[str]) -> list[str]:
    """The concepts to leave out, checked before any work: each a world concept, none twice, and never every
    concept of a category that has several (that is a world without a category, not one without a concept).
    Returns them sorted."""
    names = [n.strip() for n in without]
    if not names or not all(names):
        raise ObliviateError("--without is empty: name the concepts to leave out")
    if len(set(names)) != len(names):
        raise ObliviateError("--without names a concept twice")
    for name in names:
        try:
            domain.concept_by_name(name)
        except KeyError as exc:
            raise ObliviateError(str(exc.args[0])) from None
    for category, classes in domain.CATEGORY_CLASSES.items():
        members = classes[1:]
        if len(members) > 1 and set(members) <= set(names):
            raise ObliviateError(f"--without names every {category} concept ({', '.join(members)}): an oracle "
                                 "leaves concepts out, not a whole category")
    return sorted(names)


def shows_any(scene: domain.Scene, without: Sequence[str]) -> bool:
    """Whether ``scene`` shows one of the concepts ``without`` (what its detector labels would say)."""
    return any(scene.value(domain.concept_by_name(n).category) == n for n in without)


def find_oracle(without: Sequence[str]) -> Path:
    """The oracle folder for exactly ``without``: shipped with obliviate, else built into the cache
    (``benchmarks/oracles.py`` or ``obliviate world build --without ... --out``)."""
    name = oracle_name(check_without(without))
    for folder in (SHIPPED / name, cache_root() / "oracles" / name):
        if (folder / "model_index.json").is_file():
            return folder
    raise ObliviateError(f"no oracle without {name}: build it with `obliviate world build --without "
                         f"{','.join(sorted(without))} --out {cache_root() / 'oracles' / name}` (about 21 min)")


def available_oracles() -> dict[str, Path]:
    """Every oracle found, shipped or in the cache: name -> folder (a shipped one wins)."""
    found: dict[str, Path] = {}
    for root in (SHIPPED, cache_root() / "oracles"):
        for folder in sorted(root.glob("*/model_index.json")) if root.is_dir() else []:
            if not folder.parent.name.startswith("."):  # a build under way
                found.setdefault(folder.parent.name, folder.parent)
    return found


def check_oracle(folder: str | Path, concepts: Sequence[str]) -> Path:
    """``folder`` is an oracle world trained without exactly ``concepts`` (what a figure is compared with)."""
    folder = Path(folder).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ObliviateError(f"{folder} is not a model folder (an oracle is written by `obliviate world build "
                             "--without`)")
    without = oracle_without(folder)
    if without is None:
        raise ObliviateError(f"{folder} is no oracle world (its {DERIVED_FILE} names no concepts left out)")
    if sorted(without) != sorted(concepts):
        raise ObliviateError(f"{folder} is the oracle without {', '.join(without)}, not without "
                             f"{', '.join(sorted(concepts))}")
    return folder


def load_oracle(folder: str | Path, like):
    """The oracle in ``folder`` as a pipeline on the device and in the dtype of the pipeline ``like``."""
    from ..families import denoiser
    from ..pipeline import load_pipeline

    model = denoiser(like)
    return load_pipeline(str(folder), device=model.device, dtype=model.dtype)


def build_oracle(out: str | Path, without: Sequence[str], cfg=None, log: Callable[[str], None] = print,
                 bar: bool = True) -> dict:
    """Train the world's UNet and text encoder by the shipped recipe (``cfg``: its BuildConfig, default the
    shipped one) on its training scenes minus those that show ``without``, into the new folder ``out`` (written
    whole or not at all). The tokenizer, VAE and detector are the shipped world's. Returns what ``obliviate.json``
    records."""
    without = check_without(without)
    out = Path(out)
    if out.exists():
        raise ObliviateError(f"{out} exists: give a new folder")
    import numpy as np
    from diffusers import StableDiffusionPipeline

    from . import world_fingerprint
    from .models import make_scheduler
    from .recipe import BuildConfig, recipe_torch, retrain, save_retrained, training_scenes, world_parts

    cfg = cfg or BuildConfig()
    start = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    with recipe_torch(cfg), atomic_dir(out) as tmp:
        rng = np.random.default_rng(cfg.seed)
        tokenizer, vae = world_parts()
        scenes = training_scenes(cfg, rng)
        kept = [s for s in scenes if not shows_any(s, without)]
        log(f"oracle without {', '.join(without)}: {len(scenes) - len(kept)} of {len(scenes)} training scenes "
            f"left out; rendering {len(kept)}")
        unet, text_encoder = retrain(kept, tokenizer, vae, cfg, rng, bar)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        fp = save_retrained(pipe, tmp, {"tokenizer": "tokenizer", "vae": "vae"})
        record = {"base_model": "world", "oracle": {
            "without": without, "world": world_fingerprint().id, "fingerprint": fp,
            "scenes": {"kept": len(kept), "left_out": len(scenes) - len(kept)},
            "build": {**asdict(cfg), "seconds": round(time.time() - start, 1)}}}
        (tmp / DERIVED_FILE).write_text(json.dumps(record, indent=1) + "\n")
    log(f"oracle built in {time.time() - start:.0f} s -> {out}")
    return record
