"""Every erasure method with its defaults on one concept of each category, erasure seeds 0-2; prints one table.

    python benchmarks/methods.py [--seeds 0,1,2] [--images-per-concept 32] [--methods ...] [--concepts ...]

Each cell: mean [min-max] over the seeds; each seed seeds the erasure and its evaluation (so the range holds
the evaluation's noise too). Rows print as they finish.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import add_world_option, cell, erase_and_eval, machine_line, seed_list  # noqa: E402

import obliviate  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.world import concept_by_name  # noqa: E402

CONCEPTS = ["circle", "striped", "zorvik", "red", "gore"]
METHODS = ["fmn", "esd-x", "esd-u", "uce", "rece", "advunlearn", "stereo", "prompt"]
COLUMNS = ["efficacy", "preservation", "neighbour_preservation", "h"]
HEADER = ("| method | concept | category | seconds | efficacy | preservation | neighbour pres. | H "
          "| mean feat. dist. |\n|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    add_world_option(ap)
    ap.add_argument("--images-per-concept", type=int, default=32)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = seed_list(args.seeds)
    concepts = args.concepts.split(",")
    model = obliviate.load_pipeline(args.model)
    detector = WorldDetector()
    print(machine_line(args.images_per_concept, seeds[0], args.model) + f"; erasure and evaluation seeds {seeds}\n")
    floors = [obliviate.chance_floor(model, concepts=concepts, detector=detector,
                                     images_per_concept=args.images_per_concept, seed=s, progress=False)
              for s in seeds]
    print("chance floor (base model, concept words taken out of its prompts): "
          + ", ".join(f"{c} {cell([f[i].m for f in floors])}" for i, c in enumerate(concepts)) + "\n")
    print(HEADER, flush=True)
    for concept in concepts:
        for method in args.methods.split(","):
            runs = [erase_and_eval(model, detector, method, [concept], args.images_per_concept, s)[:2]
                    for s in seeds]
            cells = [cell([r[col] for r, _ in runs]) for col in COLUMNS]
            dist = np.mean([(r["drift"] or {}).get("mean_feature_distance", np.nan) for r, _ in runs])
            print(f"| {method} | {concept} | {concept_by_name(concept).category} | "
                  f"{np.mean([s for _, s in runs]):.1f} | " + " | ".join(cells) + f" | {dist:.2f} |", flush=True)


if __name__ == "__main__":
    main()
