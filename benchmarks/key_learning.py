"""The key-learning attack (a fresh prompt memory trained on images of the concept) against plain erasures,
hiding's public patch and the base model; prints steps to 0.9 and the rate per checkpoint, seeds 0-2.

    python benchmarks/key_learning.py [--concepts zorvik] [--methods esd-x,lethe,hide] [--seeds 0,1,2] [--steps 300]

"hide" hides the concept beside a partner (zorvik+striped, striped+zorvik) and attacks the public patch with no
key. Each row: one edit and seed; the base model's steps come from the same run (its ceiling).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import machine_line, seed_list  # noqa: E402

import obliviate  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402

PARTNER = {"zorvik": "striped", "striped": "zorvik", "circle": "tavi", "red": "dotted", "gore": "heart"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", default="zorvik")
    ap.add_argument("--methods", default="esd-x,lethe,hide")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = obliviate.load_pipeline("world")
    detector = WorldDetector()
    print(machine_line(16, seed_list(args.seeds)[0]) + f"; key-learning attack, budget {args.steps} steps\n")
    print("| edit | concept | seed | steps to 0.9 (s) | base model: steps to 0.9 | rate every 25 steps |\n"
          "|---|---|---|---|---|---|", flush=True)
    for concept in args.concepts.split(","):
        for method in args.methods.split(","):
            for seed in seed_list(args.seeds):
                if method == "hide":
                    patch = obliviate.hide(pipe, [concept, PARTNER[concept]], seed=seed, progress=False).patch
                else:
                    patch = obliviate.erase(pipe, [concept], method, seed=seed, progress=False)
                r = obliviate.attack(pipe, concept, "memory", patch=patch, detector=detector, seed=seed,
                                     steps=args.steps, progress=False)
                d = r.details
                reached = "not within budget" if d["steps_to_reach"] is None else \
                    f"{d['steps_to_reach']} ({d['seconds_to_reach']:.1f})"
                curve = " ".join(f"{v:.2f}" for v in d["rate_by_step"].values())
                print(f"| {method} | {concept} | {seed} | {reached} | {d['base_steps_to_reach']} | {curve} |",
                      flush=True)


if __name__ == "__main__":
    main()
