"""Fingerprints of what every method, hiding design and attack produces at one seed, to check that a refactor
changes no number: the SHA-256 of each patch's tensors (metadata and timing left out), of each key, and the
figures of an evaluation and of every attack.

    python benchmarks/identity.py --out before.json            # on the old code
    python benchmarks/identity.py --out after.json --compare before.json

Runs every method with its defaults on the world (about 12 minutes on two CPU cores); ``--only`` picks some.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import torch

import obliviate

# (name, concept, erase options): every method of the registry with its defaults
ERASURES = [
    ("fmn", "zorvik", {}), ("redirect", "zorvik", {"redirect": "maelin"}), ("esd-x", "zorvik", {}),
    ("esd-u", "zorvik", {}), ("uce", "zorvik", {}), ("rece", "gore", {}), ("advunlearn", "zorvik", {}),
    ("stereo", "striped", {}), ("lethe", "zorvik", {}), ("prompt", "zorvik", {}),
    ("fmn-lora", "circle", {"trainable": "lora", "inversion_tokens": 2, "inversion_steps": 20}),
    ("advunlearn-attn2", "red", {"trainable": "attn2", "steps": 20}),
    ("lethe-adversaries", "zorvik", {"steps": 40, "rounds": 1, "inversion_steps": 20, "adversary_steps": 2,
                                     "keep_neighbours": 0.5, "neutral_rows": 1}),
]
HIDINGS = [("hide-lethe", "zorvik", {"design": "lethe", "steps": 60, "rounds": 1, "inversion_steps": 30,
                                     "key_steps": 60}),
           ("hide-lethe-weight-adversary", "zorvik", {"design": "lethe", "steps": 30, "rounds": 0, "key_steps": 20,
                                                      "weight_adversary_steps": 1}),
           ("hide-paper", "zorvik", {"design": "paper", "steps": 60})]
ATTACK_STEPS = 30


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def method_of(name: str) -> str:
    return name.split("-lora")[0].split("-attn2")[0].split("-adversaries")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare")
    parser.add_argument("--only", help="comma-separated names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    pipe = obliviate.load_pipeline("world")
    out: dict[str, object] = {}
    uce = None
    for name, concept, options in ERASURES:
        if only and name not in only:
            continue
        start = time.time()
        patch = obliviate.erase(pipe, concept, method_of(name), seed=args.seed, progress=False, **options)
        out[name] = tensors_hash(patch.tensors)
        print(f"{name}: {out[name][:16]} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
        uce = patch if name == "uce" else uce
    for name, concept, options in HIDINGS:
        if only and name not in only:
            continue
        start = time.time()
        hidden = obliviate.hide(pipe, concept, seed=args.seed, progress=False, **options)
        out[name] = {"patch": tensors_hash(hidden.patch.tensors),
                     "keys": {c: tensors_hash(k.tensors) for c, k in hidden.keys.items()}}
        print(f"{name}: {out[name]['patch'][:16]} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    if not only or "eval" in only or "attacks" in only:
        uce = uce or obliviate.erase(pipe, "zorvik", "uce", seed=args.seed, progress=False)
        start = time.time()
        result = obliviate.evaluate(pipe, patch=uce, concepts=["zorvik", "maelin", "circle", "striped"],
                                    images_per_concept=8, seed=args.seed, cache=False, progress=False)
        d = result.to_dict()
        out["eval"] = {k: d[k] for k in ("efficacy", "preservation", "neighbour_preservation", "h", "drift")}
        out["eval"]["m"] = {r["name"]: r["m"] for r in d["concepts"]}
        results = obliviate.attack(pipe, "zorvik", "all", patch=uce, n_images=8, seed=args.seed, progress=False,
                                   steps=ATTACK_STEPS)
        out["attacks"] = {r.attack: [r.asr, r.asr_base, r.asr_no_attack, r.prompts] for r in results}
        print(f"eval and attacks ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        differ = [k for k in out if k in before and out[k] != before[k]]
        for k in differ:
            print(f"DIFFERS {k}: {before[k]} -> {out[k]}")
        print(f"{len(out) - len(differ)} of {len(out)} identical")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
