"""FMN on the world: one concept per category, three at once, and redirect; prints Markdown tables.

    python benchmarks/fmn.py --seed 0 [--images-per-concept 16]

Every figure is measured with obliviate's own evaluation (full world bench, base results cached).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import HEADER, erase_and_eval, fmt, machine_line, row  # noqa: E402

from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.generate import generate, image_seeds  # noqa: E402
from obliviate.patch import apply_patch, remove_patch  # noqa: E402
from obliviate.pipeline import load_model  # noqa: E402
from obliviate.world import concept_by_name  # noqa: E402

SINGLE = ["circle", "striped", "zorvik", "gore"]
MULTI = ["square", "dotted", "maelin"]
REDIRECT = ("star", "heart")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images-per-concept", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model("world")
    detector = WorldDetector()
    n, seed = args.images_per_concept, args.seed
    print(machine_line(n, seed) + "\n")
    print(HEADER)
    for name in SINGLE:
        r, secs, _ = erase_and_eval(model, detector, "fmn", [name], n, seed)
        print(row("fmn", name, concept_by_name(name).category, secs, r), flush=True)
    r, secs, _ = erase_and_eval(model, detector, "fmn", MULTI, n, seed)
    per = {c["name"]: c.get("efficacy") for c in r["concepts"] if c["name"] in MULTI}
    print(f"\nthree concepts in one run ({', '.join(MULTI)}), {secs:.1f} s: efficacy "
          + ", ".join(f"{k} {fmt(v)}" for k, v in per.items()) + f"; preservation {fmt(r['preservation'])}")
    src, dst = REDIRECT
    _, secs, patch = erase_and_eval(model, detector, "fmn", [src], n, seed, redirect=dst)
    prompts = list(concept_by_name(src).prompts)
    handle = apply_patch(model.pipe, patch)
    images = generate(model, [prompts[i % len(prompts)] for i in range(n)], image_seeds(seed, n), progress=False)
    remove_patch(model.pipe, handle)
    seen = float(np.mean(detector.predict(images)["object"] == dst))
    print(f"\nredirect {src} -> {dst} ({secs:.1f} s): the detector sees {dst} in {seen:.3f} of the images "
          f"made from {src}'s prompts")


if __name__ == "__main__":
    main()
