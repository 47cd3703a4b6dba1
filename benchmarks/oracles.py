"""The oracle worlds obliviate ships: the world retrained without circle, striped, zorvik, red, gore and the pair
zorvik+striped (README, "The oracle").

    python benchmarks/oracles.py build [--only gore] [--threads 2]    # about 20 min each; skips those built
    python benchmarks/oracles.py measure --seed 0 [--images 32] [--only gore] [--attacks unlearndiff,p4d]

``build`` writes each into ``src/obliviate/world/oracles/NAME`` with the shipped recipe and seed (its
``obliviate.json`` records the build). ``measure`` prints one JSON line per oracle: its evaluation against the world
as if it were an erasure of its concepts (efficacy, preservation, neighbours, drift: what a perfect erasure scores
and costs), then, for each single-concept oracle, one line per attack: its ASR on the world (the ceiling) and on
the oracle (the floor no erasure goes below; it does not depend on the erasure, so one run serves every method).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import platform  # noqa: E402

ORACLES = [["circle"], ["striped"], ["zorvik"], ["red"], ["gore"], ["striped", "zorvik"]]


def build(args: argparse.Namespace) -> None:
    from obliviate.world.oracle import SHIPPED, build_oracle, oracle_name
    from obliviate.world.recipe import BuildConfig

    for without in ORACLES:
        name = oracle_name(without)
        if args.only and name not in args.only.split(","):
            continue
        if (SHIPPED / name).exists():
            print(json.dumps({"oracle": name, "built": "already"}), flush=True)
            continue
        record = build_oracle(SHIPPED / name, without, BuildConfig(threads=args.threads), log=print, bar=False)
        print(json.dumps({"oracle": name, **record["oracle"]["scenes"],
                          "seconds": record["oracle"]["build"]["seconds"], "threads": args.threads}), flush=True)


def measure(args: argparse.Namespace) -> None:
    import torch

    import obliviate
    from obliviate.attacks import ATTACKS
    from obliviate.world.oracle import find_oracle, oracle_name

    torch.set_num_threads(args.threads)
    world = obliviate.load_pipeline("world")
    attacks = [a for a in (args.attacks.split(",") if args.attacks else ATTACKS) if a != "memory"]
    for without in ORACLES:
        name = oracle_name(without)
        if args.only and name not in args.only.split(","):
            continue
        folder = find_oracle(without)
        if not args.skip_eval:
            start = time.time()
            r = obliviate.evaluate(world, oracle=folder, images_per_concept=args.images, seed=args.seed,
                                   progress=False).to_dict()["oracle"]
            rows = {c["name"]: c for c in r["concepts"]}
            print(json.dumps({"oracle": name, "what": "eval", "seed": args.seed, "images": args.images,
                              "m": {t: rows[t]["m"] for t in without}, "efficacy": r["efficacy"],
                              "preservation": r["preservation"], "neighbours": r["neighbour_preservation"],
                              "worst": r["worst_preserved"], "drift": r["drift"],
                              "below_0.9": {c["name"]: round(c["m"] / c["m_base"], 3) for c in r["concepts"]
                                            if c["name"] not in without and c["m"] < 0.9 * c["m_base"]},
                              "seconds": round(time.time() - start, 1)}), flush=True)
        single = len(without) == 1 and not args.skip_attacks  # a pair's attacks: benchmarks/hiding.py --oracle
        for concept in without if single else []:
            for attack in attacks:
                start = time.time()
                r = obliviate.attack(world, concept, attack, oracle=folder, seed=args.seed, n_images=args.images,
                                     progress=False).to_dict()
                d = r["details"]
                print(json.dumps({"oracle": name, "what": "attack", "attack": attack, "seed": args.seed,
                                  "asr_world": r["asr"], "asr_oracle": r["asr_oracle"],
                                  **({k: d.get(k) for k in ("steps_to_reach", "oracle_steps_to_reach")}
                                     if "steps_to_reach" in d else {}),
                                  "seconds": round(time.time() - start, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build")
    b.add_argument("--only", help="comma-separated oracle names (e.g. gore,striped+zorvik)")
    b.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("measure")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--images", type=int, default=32, help="images per concept and per attack")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--only", help="comma-separated oracle names")
    m.add_argument("--attacks", help="comma-separated attacks (default: all but memory)")
    m.add_argument("--skip-eval", action="store_true")
    m.add_argument("--skip-attacks", action="store_true")
    args = parser.parse_args()
    import torch

    print(json.dumps({"machine": platform.machine(), "threads": args.threads, "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d")}), flush=True)
    {"build": build, "measure": measure}[args.step](args)


if __name__ == "__main__":
    main()
