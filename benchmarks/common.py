"""Shared by the benchmark scripts: erase one set of concepts, evaluate it, format a table row."""

from __future__ import annotations

import ast
import os
import platform
import time

import numpy as np
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # as the CLI: no "torchvision is absent" notices

import obliviate


def add_world_option(ap) -> None:
    """``--model``: the shipped world a benchmark measures on (any of them by name)."""
    from obliviate.world import WORLDS

    ap.add_argument("--model", default="world", help=f"the world to measure on ({', '.join(WORLDS)})")


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def cell(values: list[float | None], digits: int = 3) -> str:
    """``mean [min-max]`` over seeds (None values, e.g. no neighbours, left out)."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def seed_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def machine_line(images_per_concept: int, seed: int, model: str = "world") -> str:
    return (f"machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
            f"model {model}; eval: full world bench, {images_per_concept} images/concept, seed {seed}")


def erase_and_eval(pipe, detector, method: str, concepts: list[str], images_per_concept: int, seed: int,
                   eval_seed: int | None = None, **overrides) -> tuple[dict, float, object]:
    """(eval result as a dict, seconds the erasure took, patch); the evaluation uses ``eval_seed`` (default:
    ``seed``)."""
    start = time.time()
    patch = obliviate.erase(pipe, concepts, method, seed=seed, progress=False, **overrides)
    seconds = time.time() - start
    result = obliviate.evaluate(pipe, patch=patch, images_per_concept=images_per_concept, detector=detector,
                                seed=seed if eval_seed is None else eval_seed, progress=False)
    return result.to_dict(), seconds, patch


HEADER = ("| method | concept | category | seconds | efficacy | preservation | neighbour pres. | H | frechet | "
          "mean feat. dist. |\n|---|---|---|---|---|---|---|---|---|---|")


def row(method: str, concept: str, category: str, seconds: float, r: dict) -> str:
    d = r["drift"] or {}
    return (f"| {method} | {concept} | {category} | {seconds:.1f} | {fmt(r['efficacy'])} | {fmt(r['preservation'])} | "
            f"{fmt(r['neighbour_preservation'])} | {fmt(r['h'])} | {fmt(d.get('frechet'))} | "
            f"{fmt(d.get('mean_feature_distance'))} |")


def parse_set(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs into config overrides; VALUE is a Python literal (0.9, 300, True, (0.1, 0.9)) or
    else a string."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set takes KEY=VALUE, got {item!r}")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
        if isinstance(overrides[key], list):  # configs take tuples, and hiding's cache needs hashable values
            overrides[key] = tuple(overrides[key])
    return overrides
