"""Mass erasure: erase the first 1, 3, 6 and 11 characters (IDs) of the world in one run with each method that
takes several concepts; efficacy on the erased, preservation of the remaining IDs and of the other categories
(the curve of UCE's and MACE's papers, where erasing many concepts at once is what breaks methods).

    python benchmarks/mass.py [--counts 1,3,6,11] [--methods uce,fmn] [--seeds 0,1,2] [--images-per-concept 32]

Each cell: mean [min-max] over the erasure seeds (each seed also seeds the evaluation). Rows print as they finish.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import cell, erase_and_eval, machine_line, seed_list  # noqa: E402

import obliviate  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.eval.metrics import preservation  # noqa: E402
from obliviate.world.domain import IDS  # noqa: E402

METHODS = ["uce", "rece", "fmn", "esd-x", "esd-u", "advunlearn", "stereo", "lethe", "prompt"]  # redirect: one concept


def measure(result: dict, targets: list[str]) -> tuple[float | None, float | None, float | None]:
    """(efficacy on the erased, preservation of the remaining IDs, preservation of every other category)."""
    rows = [c for c in result["concepts"] if c["name"] not in targets]
    ids = [(c["m_base"], c["m"]) for c in rows if c["category"] == "id"]
    rest = [(c["m_base"], c["m"]) for c in rows if c["category"] != "id"]
    return result["efficacy"], preservation(ids), preservation(rest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1,3,6,11")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--images-per-concept", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = obliviate.load_pipeline("world")
    detector = WorldDetector()
    seeds = seed_list(args.seeds)
    print(machine_line(args.images_per_concept, seeds[0]) + f"; erasure seeds {seeds}\n")
    print("| method | IDs erased | efficacy (erased) | preservation (other IDs) | preservation (other categories) "
          "| seconds (erasure) |")
    print("|---|---|---|---|---|---|", flush=True)
    for method in args.methods.split(","):
        for k in (int(c) for c in args.counts.split(",")):
            targets = list(IDS[:k])
            eff, ids, rest, seconds = [], [], [], []
            for seed in seeds:
                result, secs, _ = erase_and_eval(pipe, detector, method, targets, args.images_per_concept, seed)
                seconds.append(secs)
                e, i, r = measure(result, targets)
                eff.append(e)
                ids.append(i)
                rest.append(r)
            print(f"| {method} | {k} | {cell(eff)} | {cell(ids)} | {cell(rest)} | {np.mean(seconds):.1f} |",
                  flush=True)
    print(f"\ndone {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
