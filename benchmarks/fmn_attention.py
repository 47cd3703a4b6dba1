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

from obliviate.attention import Attn2Processor, Capture, attn2_processors  # noqa: E402
from obliviate.inversion import images_to_latents  # noqa: E402
from obliviate.methods import get_method  # noqa: E402
from obliviate.methods.common import concept_images, encode_prompts  # noqa: E402
from obliviate.patch import apply_patch, remove_patch  # noqa: E402
from obliviate.pipeline import Model, load_model  # noqa: E402
from obliviate.world import concept_by_name  # noqa: E402

TIMESTEPS = (200, 500, 800)


def token_attention(model: Model, prompt: str, latents: torch.Tensor, seed: int) -> np.ndarray:
    """(L,) mean attention on each padded text position of ``prompt`` over layers, heads, queries, images."""
    unet, tok = model.pipe.unet, model.pipe.tokenizer
    n, length = len(latents), tok.model_max_length
    cond = encode_prompts(model, [prompt]).expand(n, -1, -1)
    capture = Capture()
    gen = torch.Generator().manual_seed(seed)
    total = np.zeros(length)
    with attn2_processors(unet, Attn2Processor(capture)), torch.no_grad():
        for tv in TIMESTEPS:
            t = torch.full((n,), tv)
            a = model.pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * torch.randn(latents.shape, generator=gen)
            capture.reset(torch.ones(n, length, dtype=torch.bool))
            unet(noisy, t, cond)
            layers = [p.reshape(n, length, -1).mean((0, 2)).numpy() for p in capture.probs]
            total += np.mean(layers, 0)
    return total / len(TIMESTEPS)


def show(model: Model, tag: str, prompts: list[str], latents: torch.Tensor, seed: int) -> None:
    tok = model.pipe.tokenizer
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
    model = load_model("world")
    concept = concept_by_name(args.concept)
    prompts = list(concept.prompts)
    latents = images_to_latents(model, concept_images(model, concept.name, prompts, "world", 8, args.seed))
    print(machine_line(8, args.seed) + f"; FMN on {concept.name}, default settings\n")
    print("| model | prompt | attention per token | pads |\n|---|---|---|---|")
    show(model, "base", prompts, latents, args.seed)
    method = get_method("fmn")
    patch = method.fit(model, [concept.name], method.make_config(seed=args.seed, progress=False))
    handle = apply_patch(model.pipe, patch)
    show(model, "fmn", prompts, latents, args.seed)
    remove_patch(model.pipe, handle)


if __name__ == "__main__":
    main()
