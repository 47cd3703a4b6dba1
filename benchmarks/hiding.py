"""Key-locked hiding red-teamed on the world (docs/hiding.md): one ID and one style hidden in one patch.

    python benchmarks/hiding.py --seed 0 [--design lethe] [--threads 1] [--set steps=450]   # steps per concept
    python benchmarks/hiding.py --seed 0 --oracle             # every attack also on the oracle without the pair
    python benchmarks/hiding.py --seed 0 --concepts maelin,dotted --claims 1,2,5,6    # no key learning, no leaks

Prints one JSON line per measurement: without a key, each hidden concept's efficacy, its rate on every other
concept's prompts (the swap check), every attack of the suite, the key-learning attack in the shape of the
design's keys (beside the same attack on a plain Lethe erasure of the concept and on the base model), and
the best of ``--tries`` memories built from the public patch's strongest weight directions; with each key,
the concept's M-Score against the base model's, the other hidden concept's efficacy, and preservation.
Every figure comes from obliviate's own API.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import add_world_option, machine_line, parse_set  # noqa: E402

import obliviate  # noqa: E402
from obliviate.attacks.base import Probe, probe_images  # noqa: E402
from obliviate.attacks.directions import DirectionAttackConfig, direction_memories  # noqa: E402
from obliviate.catalog import catalog_for  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.hiding import Key, hide_config  # noqa: E402

HIDDEN = ["zorvik", "striped"]
ATTACKS = ["inversion", "unlearndiff", "p4d", "ringabell", "implicit", "completion"]


def emit(**row) -> dict:
    print(json.dumps(row), flush=True)
    return row


def evaluation(model, detector, patch, keys, n: int, seed: int) -> dict:
    r = obliviate.evaluate(model, patch=patch, keys=keys, images_per_concept=n, seed=seed, detector=detector,
                           progress=False).to_dict()
    rows = {c["name"]: c for c in r["concepts"]}
    out = {"preservation": r["preservation"], "neighbours": r.get("neighbour_preservation"),
           "worst": r.get("worst_preserved"),  # and every kept concept below 0.9 of its base M-Score:
           "below_0.9": {c["name"]: round(c["m"] / c["m_base"], 3) for c in r["concepts"]
                         if c["name"] not in HIDDEN and c["m_base"] > 0 and c["m"] / c["m_base"] < 0.9}}
    for h in HIDDEN:
        row = rows[h]
        swaps = {k: round(m - b, 3) for k, (b, m) in (row.get("elsewhere") or {}).get("by_concept", {}).items()}
        out[h] = {"m": row["m"], "m_base": row["m_base"], "efficacy": row.get("efficacy"),
                  "swap_max": max(swaps.values(), default=0.0), "swap": swaps}
    return out


def key_learning(model, concept: str, patch, seed: int, n: int, form: str, oracle: bool = False) -> dict:
    r = obliviate.attack(model, concept, "memory", patch=patch, seed=seed, n_images=n, form=form, oracle=oracle,
                         progress=False).to_dict()
    d = r["details"]
    return {"asr": r["asr"], "steps_to_reach": d.get("steps_to_reach"), "seconds": d.get("seconds_to_reach"),
            "base_steps_to_reach": d.get("base_steps_to_reach"), "max_rate": max(d["rate_by_step"].values()),
            **({"oracle_steps_to_reach": d.get("oracle_steps_to_reach"), "asr_oracle": r["asr_oracle"]}
               if oracle else {})}


def directions(model, detector, patch, concept: str, tries: int, seed: int) -> dict:
    catalog = catalog_for(model)
    c = catalog.concept(concept)
    # the first text encoder's scale, as docs/hiding.md's figures were measured (the attack's default, every
    # encoder's table side by side, is the same on SD and differs on SDXL/SD3/Flux)
    scale = model.text_encoder.get_input_embeddings().weight.float().std().item()
    rates = []
    with patch.applied(model):
        for memory in direction_memories(model, patch, DirectionAttackConfig(tries=tries, seed=seed), scale):
            probe = Probe(list(c.prompts), key=Key.of_memory(concept, memory, "all"))
            images, _ = probe_images(model, probe, 8, seed, catalog.sampler)
            rates.append(float(np.mean(detector.hits(images, c))))
    return {"tries": tries, "max_rate": max(rates), "unlocked_0.5": sum(r >= 0.5 for r in rates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    add_world_option(ap)
    ap.add_argument("--design", choices=["lethe", "paper"], default="lethe")
    ap.add_argument("--images-per-concept", type=int, default=16)
    ap.add_argument("--attack-images", type=int, default=16)
    ap.add_argument("--tries", type=int, default=100, help="memories from the patch's strongest directions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--claims", default="1,2,3,4,5,6",
                    help="which claims to measure: 2, 5 and 6 are the evaluations (always run), 1 the attack suite, "
                         "3 the key learning, 4 the patch-direction memories (default: %(default)s)")
    ap.add_argument("--skip-attacks", action="store_true", help="the same as --claims 2,5,6")
    ap.add_argument("--concepts", default=",".join(HIDDEN), help="the pair hidden in one patch (default: %(default)s)")
    ap.add_argument("--oracle", action="store_true",
                    help="also run every attack and the key learning on the oracle without the hidden concepts")
    ap.add_argument("--save", metavar="DIR", help="also write the public patch and keys there")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an option of the design's hiding config (e.g. steps=450, per concept; "
                         "key_steps=500); repeatable")
    args = ap.parse_args()
    HIDDEN[:] = args.concepts.split(",")
    claims = set() if args.skip_attacks else {int(c) for c in args.claims.split(",")}
    overrides = parse_set(args.set)
    try:
        hide_config(args.design, **overrides)  # refused before the model loads
    except obliviate.ObliviateError as e:
        raise SystemExit(f"error: {e}") from None
    torch.set_num_threads(args.threads)
    model, detector = obliviate.load_pipeline(args.model), WorldDetector()
    n, seed = args.images_per_concept, args.seed
    print(machine_line(n, seed, args.model), flush=True)
    start = time.time()
    hidden = obliviate.hide(model, HIDDEN, design=args.design, seed=seed, progress=False, **overrides)
    emit(what="hide", design=args.design, seed=seed, overrides=overrides, seconds=round(time.time() - start, 1))
    if args.save:
        hidden.save(Path(args.save) / f"public-{seed}.safetensors", Path(args.save) / f"keys-{seed}")
    emit(what="no key", **evaluation(model, detector, hidden.patch, [], n, seed))
    for name in HIDDEN:
        emit(what=f"key {name}", **evaluation(model, detector, hidden.patch, [hidden.keys[name]], n, seed))
    for name in HIDDEN:
        for a in ATTACKS if 1 in claims else []:
            r = obliviate.attack(model, name, a, patch=hidden.patch, seed=seed, n_images=args.attack_images,
                                 ceiling=False, oracle=args.oracle, progress=False).to_dict()
            emit(what="attack", concept=name, attack=a, asr=r["asr"], asr_oracle=r.get("asr_oracle"))
        if 3 in claims:
            form = "lora" if args.design == "lethe" else "memory"  # the shape of the design's keys
            emit(what="key learning", concept=name, on="public patch", form=form,
                 **key_learning(model, name, hidden.patch, seed, args.attack_images, form, args.oracle))
            plain = obliviate.erase(model, [name], "lethe", seed=seed, progress=False)
            emit(what="key learning", concept=name, on="plain lethe", form=form,
                 **key_learning(model, name, plain, seed, args.attack_images, form))
        if 4 in claims:
            emit(what="directions", concept=name, **directions(model, detector, hidden.patch, name, args.tries, seed))


if __name__ == "__main__":
    main()
