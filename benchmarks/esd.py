"""ESD-x variants side by side: which difference from the authors' loop costs the neighbours; prints a table.

    python benchmarks/esd.py [--seeds 0,1,2] [--concepts striped,zorvik] [--images-per-concept 16]

Variants (each a set of ESDConfig overrides) start from the defaults before this study (x_t drawn by the
model being edited, lr 5e-4) and change one thing each: training after the last sampler step too; gradient
clipping; training on the name only; batch 1 for 200 steps; x_t drawn by the frozen model (alone, with 150
steps, with the name only); today's defaults (x_t frozen, lr 1e-3); and the authors' loop (x_t frozen, name
only, batch 1, 200 iterations, 50 DDIM steps, lr 5e-4). Every erasure is evaluated on the full world bench
at evaluation seed 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import erase_and_eval, fmt, machine_line  # noqa: E402

import obliviate  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402

PREVIOUS = {"x_t_from": "edited", "lr": 5e-4}  # the defaults before this study
VARIANTS = {  # names without commas (--variants takes a comma-separated list)
    "previous defaults": PREVIOUS,
    "+ last step": {**PREVIOUS, "include_last_step": True},
    "+ clip 1.0": {**PREVIOUS, "clip_grad": 1.0},
    "name only": {**PREVIOUS, "train_on": "name"},
    "batch 1 200 steps": {**PREVIOUS, "batch_size": 1, "steps": 200},
    "x_t frozen": {**PREVIOUS, "x_t_from": "frozen"},
    "x_t frozen 150 steps": {**PREVIOUS, "x_t_from": "frozen", "steps": 150},
    "x_t frozen name only": {**PREVIOUS, "x_t_from": "frozen", "train_on": "name"},
    "x_t frozen lr 1e-3 (defaults)": {},
    "authors' loop": {**PREVIOUS, "x_t_from": "frozen", "train_on": "name", "batch_size": 1, "steps": 200,
                      "ddim_steps": 50},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--concepts", default="striped,zorvik")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--images-per-concept", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = obliviate.load_pipeline("world")
    detector = WorldDetector()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(machine_line(args.images_per_concept, 0) + f"; erasure seeds {seeds}\n")
    print("| variant | concept | seconds (mean) | efficacy mean (range) | preservation mean (range) | "
          "neighbours mean (range) |\n|---|---|---|---|---|---|")
    for name in args.variants.split(","):
        for concept in args.concepts.split(","):
            runs = [erase_and_eval(pipe, detector, "esd-x", [concept], args.images_per_concept, s, eval_seed=0,
                                   **VARIANTS[name]) for s in seeds]
            cells = []
            for key in ("efficacy", "preservation", "neighbour_preservation"):
                v = [r[key] for r, _, _ in runs]
                cells.append(f"{fmt(float(np.mean(v)))} ({fmt(min(v))}–{fmt(max(v))})")
            secs = np.mean([s for _, s, _ in runs])
            print(f"| {name} | {concept} | {secs:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
