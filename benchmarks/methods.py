"""Every erasure method with its defaults on one concept of each category; prints one table.

    python benchmarks/methods.py --seed 0 [--images-per-concept 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import HEADER, erase_and_eval, machine_line, row  # noqa: E402

import obliviate  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.world import concept_by_name  # noqa: E402

CONCEPTS = ["circle", "striped", "zorvik", "gore"]
METHODS = ["fmn", "esd-x", "esd-u", "uce", "prompt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images-per-concept", type=int, default=16)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = obliviate.load_pipeline("world")
    detector = WorldDetector()
    print(machine_line(args.images_per_concept, args.seed) + "\n")
    floors = obliviate.chance_floor(model, concepts=args.concepts.split(","), detector=detector,
                                    images_per_concept=args.images_per_concept, seed=args.seed, progress=False)
    print("chance floor (base model, concept words taken out of its prompts): "
          + ", ".join(f"{f.concept} {f.m:.3f}" for f in floors) + "\n")
    print(HEADER)
    for concept in args.concepts.split(","):
        for method in args.methods.split(","):
            r, secs, _ = erase_and_eval(model, detector, method, [concept], args.images_per_concept, args.seed)
            print(row(method, concept, concept_by_name(concept).category, secs, r), flush=True)


if __name__ == "__main__":
    main()
