"""Which way a concept enters the SDXL UNet: through cross-attention (the token states) or through the pooled
text embedding (the added time embedding), measured by swapping one of them for the concept-free prompt's.

    python benchmarks/pooled.py [--model world-sdxl] [--concepts circle,striped,zorvik,red,gore] [--methods fmn,uce]

For each concept's prompts p and their concept-free versions p0 (the concept's words taken out), M-Score of
images generated from (states, pooled) = (p, p) [the model as it is], (p, p0) [no concept in the pooled
embedding] and (p0, p) [the concept in the pooled embedding only]; the unconditional branch is SDXL's zeros.
With ``--methods``, the same three under each method's patch (defaults, seed 0), to tell what an edit of
cross-attention alone leaves to the pooled path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import machine_line  # noqa: E402

import obliviate  # noqa: E402
from obliviate.bench import world_bench  # noqa: E402
from obliviate.eval.detectors import WorldDetector  # noqa: E402
from obliviate.eval.floor import floor_prompts  # noqa: E402
from obliviate.families import encode  # noqa: E402


@torch.no_grad()
def m_score(pipe, detector, concept, states_from: list[str], pooled_from: list[str], n: int, seed: int) -> float:
    prompts = [states_from[i % len(states_from)] for i in range(n)]
    pooled = [pooled_from[i % len(pooled_from)] for i in range(n)]
    cond, pooled_cond = encode(pipe, prompts), encode(pipe, pooled)
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(n)]
    images = pipe(prompt_embeds=cond.states, pooled_prompt_embeds=pooled_cond.pooled, generator=gens,
                  num_inference_steps=20, guidance_scale=5.0, output_type="np").images
    images = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    return float(detector.hits(images, concept).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-sdxl")
    ap.add_argument("--concepts", default="circle,striped,zorvik,red,gore")
    ap.add_argument("--methods", default="", help="patches to measure under (defaults, seed 0; METHOD:OPTION=VALUE "
                                                  "changes one option, e.g. uce:pooled=false)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe, detector = obliviate.load_pipeline(args.model), WorldDetector()
    print(machine_line(args.images, args.seed, args.model) + "\n")
    print("| edit | concept | M (p, p) | M (p, p0): pooled without it | M (p0, p): only the pooled has it |")
    print("|---|---|---|---|---|")
    for method in ["none", *filter(None, args.methods.split(","))]:
        for name in args.concepts.split(","):
            concept = world_bench().concept(name)
            own, free = list(concept.prompts), list(floor_prompts(concept))
            kind, _, option = method.partition(":")  # "uce:pooled=false": a method with one option changed
            options = {k: {"true": True, "false": False}.get(v, v) for k, v in [option.split("=")]} if option else {}
            patch = None if kind == "none" else obliviate.erase(pipe, name, kind, seed=0, progress=False, **options)
            with patch.applied(pipe) if patch is not None else torch.no_grad():
                cells = [m_score(pipe, detector, concept, s, p, args.images, args.seed)
                         for s, p in [(own, own), (own, free), (free, own)]]
            print(f"| {method} | {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
