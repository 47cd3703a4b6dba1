"""Where the cross-attention goes, per prompt token, before and after FMN erases a concept.

    python benchmarks/fmn_attention.py [--concept zorvik] [--seed 0]

For each of the concept's bench prompts: the attention of the spatial queries on every text token (mean
over attn2 layers, heads, queries, 8 renderings of the concept and timesteps 200/500/800), pads summed.
It shows how far FMN's edit, learned on "a photo of X", carries to the bench's other phrasings: on the world
the mass leaves the concept's positions (the concept, end-of-text, pads) for the words before it, almost
completely in prompts with a few words before the concept and only partly in the bare "X" or "a X", which
is where the erased concept survives (see the per-prompt M-Scores of benchmarks/fmn.py).
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
from obliviate.attention import AttnCall  # noqa: E402
from obliviate.catalog import WorldCatalog  # noqa: E402
from obliviate.diffusion import generator, images_to_latents, noised, training_scheduler  # noqa: E402
from obliviate.families import attention, encode, predict  # noqa: E402

TIMESTEPS = (200, 500, 800)


def token_attention(pipe, prompt: str, latents: torch.Tensor, seed: int) -> np.ndarray:
    """(L,) mean attention on each padded text position of ``prompt`` over layers, heads, queries, images."""
    tok = pipe.tokenizer
    n, length = len(latents), tok.model_max_length
    cond = encode(pipe, [prompt]).expand(n)
    sched = training_scheduler(pipe)
    gen = generator(seed, "attention")
    total = np.zeros(length)
    with attention(pipe), torch.no_grad():
        for tv in TIMESTEPS:
            t = torch.full((n,), tv)
            call = AttnCall(token_mask=torch.ones(n, length, dtype=torch.bool))
            predict(pipe, noised(sched, latents, t, gen), t, cond, attention=call)
            layers = [p.reshape(n, length, -1).mean((0, 2)).float().numpy() for p in call.captured]
            total += np.mean(layers, 0)
    return total / len(TIMESTEPS)


def show(model, tag: str, prompts: list[str], latents: torch.Tensor, seed: int) -> None:
    tok = model.tokenizer
    for prompt in prompts:
        ids = tok(prompt).input_ids
        mass = token_attention(model, prompt, latents, seed)
        words = [t.replace("</w>", "").replace("<|startoftext|>", "<start>").replace("<|endoftext|>", "<end>")
                 for t in tok.convert_ids_to_tokens(ids)]
        cells = " ".join(f"{w} {m:.2f}" for w, m in zip(words, mass[:len(ids)], strict=True))
        print(f"| {tag} | {prompt} | {cells} | {mass[len(ids):].sum():.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="zorvik")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = obliviate.load_pipeline("world")
    catalog = WorldCatalog()
    concept = catalog.concept(args.concept)
    prompts = list(concept.prompts)
    latents = images_to_latents(model, catalog.images(model, concept, 8, args.seed))
    print(machine_line(8, args.seed) + f"; FMN on {concept.name}, default settings\n")
    print("| model | prompt | attention per token | pads |\n|---|---|---|---|")
    show(model, "base", prompts, latents, args.seed)
    patch = obliviate.erase(model, concept.name, "fmn", seed=args.seed, progress=False)
    with patch.applied(model):
        show(model, "fmn", prompts, latents, args.seed)


if __name__ == "__main__":
    main()
