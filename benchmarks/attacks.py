"""Attack success rates: every method (and hiding without a key, and with another concept's key) on one concept
per category, every attack, erasure seeds 0-2; prints ASR mean and range, the base-model ceiling and seconds.

    python benchmarks/attacks.py [--concepts zorvik,gore] [--seeds 0,1,2] [--n-images 16] [--threads 2]
    python benchmarks/attacks.py --methods lethe --set t_max=0.9 --evaluate   # a variant, with its preservation
    python benchmarks/attacks.py --methods uce,lethe --attacks relearn --skip-ceiling   # cells: steps to 0.9

Each row: one edit (method, concept) over the seeds; per attack "mean [min-max]" of the ASR. The ceiling row
is the same attack on the base model (mean over the seeds), "no attack" the concept's own prompts on the edit.
Rows are printed as they finish (Markdown), so a long run can be read while it goes. ``--set KEY=VALUE`` overrides
a field of the methods' configs (the row is labelled with it); ``--evaluate`` also evaluates each edit on the full
bench and adds its efficacy, preservation and neighbour preservation to the row.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import add_world_option, cell, machine_line, parse_set, seed_list  # noqa: E402

import obliviate  # noqa: E402
from obliviate.attacks import ATTACKS, LEARNING  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402

CONCEPTS = ["circle", "striped", "zorvik", "red", "gore"]
METHODS = ["fmn", "esd-x", "esd-u", "uce", "rece", "advunlearn", "stereo", "prompt", "redirect", "hide",
           "hide+wrong key"]
PARTNER = {"circle": "tavi", "striped": "zorvik", "zorvik": "striped", "red": "dotted", "gore": "heart"}
REDIRECT = {"circle": "square", "striped": "dotted", "zorvik": "maelin", "red": "green", "gore": "red"}


@functools.lru_cache(maxsize=4)
def hidden_pair(pipe, concept: str, seed: int, overrides: tuple[tuple[str, object], ...] = ()):
    """One hiding per (concept, seed), shared by the 'hide' and 'hide+wrong key' rows."""
    return obliviate.hide(pipe, [concept, PARTNER[concept]], seed=seed, progress=False, **dict(overrides))


def edits(pipe, method: str, concept: str, seed: int, overrides: dict | None = None, preset: str | None = None):
    """(patch, keys) of one edit; hiding hides the concept beside a partner whose key is the 'wrong' one;
    redirect sends the concept to a neighbour of its category; ``overrides`` set fields of the method's config."""
    overrides = overrides or {}
    if method.startswith("hide"):
        hidden = hidden_pair(pipe, concept, seed, tuple(sorted(overrides.items())))
        return hidden.patch, [hidden.keys[PARTNER[concept]]] if "wrong" in method else []
    extra = {"redirect": REDIRECT[concept]} if method == "redirect" else {}
    return obliviate.erase(pipe, concept, method, seed=seed, preset=preset, progress=False, **extra, **overrides), []


def result_value(attack: str, r) -> float | None:
    """What a cell averages: the ASR, or for a fine-tuning attack its steps to 0.9 (None: not within budget)."""
    return r.details["steps_to_reach"] if attack in LEARNING else r.asr


def result_cell(attack: str, values: list) -> str:
    """An ASR cell, or for a fine-tuning attack its steps to 0.9 ("k of n not within budget" for the seeds that
    did not get there)."""
    if attack not in LEARNING:
        return cell(values, 2)
    missed = sum(v is None for v in values)
    return cell(values, 0) + (f" ({missed} of {len(values)} not within budget)" if missed else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--attacks", default=",".join(a for a in ATTACKS if a not in LEARNING),
                    help="default: all but the fine-tuning attacks (relearn, memory: their cells are steps to 0.9, "
                         "not an ASR)")
    ap.add_argument("--seeds", default="0,1,2")
    add_world_option(ap)
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--skip-ceiling", action="store_true", help="no base-model rows (adding methods to a table)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 each when running two side by side)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of the methods' configs (repeatable), e.g. --set t_max=0.9")
    ap.add_argument("--preset", help="a preset of the methods (e.g. lethe's early-decided or auto)")
    ap.add_argument("--evaluate", action="store_true",
                    help="also evaluate each edit on the full bench (efficacy, preservation, neighbours)")
    ap.add_argument("--images-per-concept", type=int, default=32, help="the evaluation's images (--evaluate)")
    args = ap.parse_args()
    overrides = parse_set(args.set)
    settings = ([f"preset {args.preset}"] if args.preset else []) + [f"{k}={v}" for k, v in overrides.items()]
    label = " (" + ", ".join(settings) + ")" if settings else ""
    quality = ["efficacy", "preservation", "neighbour_preservation"] if args.evaluate else []
    torch.set_num_threads(args.threads)
    pipe = obliviate.load_pipeline(args.model)
    detector = WorldDetector()
    seeds = seed_list(args.seeds)
    attacks = args.attacks.split(",")
    print(machine_line(args.images_per_concept if args.evaluate else args.n_images, seeds[0], args.model)
          + f"; attack images {args.n_images}, erasure seeds {seeds}\n")
    print("| edit | concept | no attack | " + " | ".join(attacks + quality) + " |")
    print("|---|---|---|" + "---|" * len(attacks + quality), flush=True)
    for concept in args.concepts.split(","):
        ceiling = {a: [] for a in attacks}
        seconds = {a: [] for a in attacks}
        for seed in [] if args.skip_ceiling else seeds:  # the attack on the base model, once per seed
            for a in attacks:
                r = obliviate.attack(pipe, concept, a, detector=detector, n_images=args.n_images, seed=seed,
                                     progress=False)
                ceiling[a].append(result_value(a, r))
        if not args.skip_ceiling:
            print(f"| base model (ceiling) | {concept} | | " + " | ".join(result_cell(a, ceiling[a]) for a in attacks)
                  + " |", flush=True)
        for method in args.methods.split(","):
            asr = {a: [] for a in attacks}
            plain = []
            scores = {q: [] for q in quality}
            for seed in seeds:
                patch, keys = edits(pipe, method, concept, seed, overrides, args.preset)
                if quality:
                    result = obliviate.evaluate(pipe, patch=patch, keys=keys, detector=detector, seed=seed,
                                                images_per_concept=args.images_per_concept, progress=False)
                    for q in quality:
                        scores[q].append(getattr(result, q))
                for a in attacks:
                    r = obliviate.attack(pipe, concept, a, patch=patch, keys=keys, detector=detector,
                                         n_images=args.n_images, seed=seed, ceiling=False, progress=False)
                    asr[a].append(result_value(a, r))
                    seconds[a].append(r.seconds)
                plain.append(r.asr_no_attack)
            print(f"| {method}{label} | {concept} | {cell(plain, 2)} | "
                  + " | ".join([result_cell(a, asr[a]) for a in attacks] + [cell(scores[q]) for q in quality]) + " |",
                  flush=True)
        print(f"| seconds per attack | {concept} | | " + " | ".join(f"{np.mean(seconds[a]):.1f}" for a in attacks)
              + " |", flush=True)
    print(f"\ndone {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
