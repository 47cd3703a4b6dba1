"""FMN on the world: one concept per category, three at once; and redirect; prints Markdown tables.

    python benchmarks/fmn.py [--seeds 0,1,2] [--images-per-concept 16] [--parts single,multi,redirect]
        [--concepts circle,striped,zorvik,gore] [--threads 2]

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

import obliviate  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.world import concept_by_name  # noqa: E402

SINGLE = ["circle", "striped", "zorvik", "gore"]
MULTI = ["square", "dotted", "maelin"]
REDIRECT = [("star", "heart"), ("circle", "square"), ("zorvik", "maelin"), ("striped", "dotted")]
PARTS = ("single", "multi", "redirect")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="erasure seeds; every figure is given per seed and averaged")
    ap.add_argument("--images-per-concept", type=int, default=16)
    ap.add_argument("--parts", default=",".join(PARTS), help="which tables to make (default: all)")
    ap.add_argument("--concepts", default=",".join(SINGLE), help="concepts of the single-concept table")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        ap.error(f"--parts: choose from {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    model = obliviate.load_pipeline("world")
    detector = WorldDetector()
    n = args.images_per_concept
    seeds = [int(s) for s in args.seeds.split(",")]
    print(machine_line(n, 0) + f"; erasure seeds {seeds}\n")
    if "single" in parts:
        _single(model, detector, n, seeds, args.concepts.split(","))
    if "multi" in parts:
        _multi(model, detector, n, seeds)
    if "redirect" in parts:
        _redirect(model, detector, n, seeds)


def _single(model, detector, n: int, seeds: list[int], names: list[str]) -> None:
    print(HEADER.replace("| concept |", "| concept (seed) |", 1))
    summary = []
    by_prompt = []
    for name in names:
        runs = [erase_and_eval(model, detector, "fmn", [name], n, s, eval_seed=0) for s in seeds]
        for s, (r, secs, _) in zip(seeds, runs, strict=True):
            print(row("fmn", f"{name} ({s})", concept_by_name(name).category, secs, r), flush=True)
            target = next(c for c in r["concepts"] if c["name"] == name)
            by_prompt.append(f"{name} ({s}): " + ", ".join(f"'{p['prompt']}' {p['m_base']:.2f}->{p['m']:.2f}"
                                                       for p in target["prompts"]))
        summary.append(f"{name}: " + _means(runs))
    print("\nmeans over seeds: " + "; ".join(summary))
    print("\nM-Score per prompt, base -> edited:\n" + "\n".join(by_prompt))


def _multi(model, detector, n: int, seeds: list[int]) -> None:
    for s in seeds:
        r, secs, _ = erase_and_eval(model, detector, "fmn", MULTI, n, s, eval_seed=0)
        per = {c["name"]: c.get("efficacy") for c in r["concepts"] if c["name"] in MULTI}
        print(f"\nthree concepts in one run ({', '.join(MULTI)}), seed {s}, {secs:.1f} s: efficacy "
              + ", ".join(f"{k} {fmt(v)}" for k, v in per.items()) + f"; preservation {fmt(r['preservation'])}",
              flush=True)


def _redirect(model, detector, n: int, seeds: list[int]) -> None:
    print("\n| redirect (seed) | seconds | Y seen on X's prompts | X seen | preservation | neighbour pres. |")
    print("|---|---|---|---|---|---|")
    for src, dst in REDIRECT:
        concept = concept_by_name(src)
        prompts = list(concept.prompts)
        for s in seeds:
            r, secs, patch = erase_and_eval(model, detector, "redirect", [src], n, s, eval_seed=0, redirect=dst)
            images = obliviate.generate(model, prompts, n=n, seed=0, patch=patch, progress=False)
            drawn = detector.predict(images)[concept.category]
            print(f"| {src} -> {dst} ({s}) | {secs:.1f} | {np.mean(drawn == dst):.3f} | {np.mean(drawn == src):.3f} "
                  f"| {fmt(r['preservation'])} | {fmt(r['neighbour_preservation'])} |", flush=True)


def _means(runs: list) -> str:
    keys = ("efficacy", "preservation", "neighbour_preservation")
    vals = {k: [r[k] for r, _, _ in runs if r[k] is not None] for k in keys}
    secs = np.mean([s for _, s, _ in runs])
    return ", ".join(f"{k.split('_')[0]} {np.mean(v):.3f} (min {np.min(v):.3f})" for k, v in vals.items() if v) + \
        f", {secs:.1f} s"


if __name__ == "__main__":
    main()
