"""Learnable-prompt erasure versus ESD-x, and key-locked hiding, on the world; prints Markdown tables.

    python benchmarks/hiding.py --seed 0 [--images-per-concept 16]

Every figure is measured with obliviate's own evaluation (full world bench, base results cached).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import HEADER, erase_and_eval, fmt, machine_line, row  # noqa: E402

import obliviate  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.hiding import Key  # noqa: E402
from obliviate.world import concept_by_name  # noqa: E402

COMPARE = ["zorvik", "striped", "circle"]
HIDDEN = ["zorvik", "striped"]


def _random_key(like: Key, seed: int) -> Key:
    gen = torch.Generator().manual_seed(seed)
    return Key(like.concept, torch.randn(like.keys.shape, generator=gen) * like.keys.std(),
               torch.randn(like.values.shape, generator=gen) * like.values.std(), like.placement, like.patch_sha256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images-per-concept", type=int, default=16)
    ap.add_argument("--hide-only", action="store_true", help="skip the prompt-versus-ESD-x comparison")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = obliviate.load_pipeline("world")
    detector = WorldDetector()
    n, seed = args.images_per_concept, args.seed
    print(machine_line(n, seed) + "\n")
    if not args.hide_only:
        print(HEADER)
        for concept in COMPARE:
            for method in ("prompt", "esd-x"):
                r, secs, _ = erase_and_eval(model, detector, method, [concept], n, seed)
                print(row(method, concept, concept_by_name(concept).category, secs, r), flush=True)

    start = time.time()
    hidden = obliviate.hide(model, HIDDEN, seed=seed, progress=False)
    secs = time.time() - start
    print(f"\nhide {', '.join(HIDDEN)} in one patch ({secs:.1f} s); M-Score of each hidden concept, and preservation "
          "of the others, under each key:\n")
    print("| key | " + " | ".join(HIDDEN) + " | preservation (non-hidden) |\n|---|" + "---|" * (len(HIDDEN) + 1))
    cases = [("none", [])] + [(name, [hidden.keys[name]]) for name in HIDDEN]
    cases.append(("random, same shape", [_random_key(hidden.keys[HIDDEN[0]], seed + 99)]))
    base = None
    for label, keys in cases:
        r = obliviate.evaluate(model, patch=hidden.patch, keys=keys, images_per_concept=n, seed=seed,
                               detector=detector, progress=False).to_dict()
        rows = {c["name"]: c for c in r["concepts"]}
        base = base or {h: rows[h]["m_base"] for h in HIDDEN}
        print(f"| {label} | " + " | ".join(fmt(rows[h]["m"]) for h in HIDDEN) + f" | {fmt(r['preservation'])} |",
              flush=True)
    print("| (base model) | " + " | ".join(fmt(base[h]) for h in HIDDEN) + " | 1.000 |")


if __name__ == "__main__":
    main()
