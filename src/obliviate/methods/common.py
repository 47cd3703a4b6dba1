"""What every erasure method shares: trainable parameter sets, concept images, prompts, and the patch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ObliviateError
from ..patch import Patch, patch_from_weights
from ..pipeline import Model

TRAINABLE_SETS = ("attn2", "attn2-kv", "attn2-qk", "unet", "non-attn2", "lora")
LORA_TARGETS = ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")


def trainable_parameters(unet, which: str) -> dict[str, torch.nn.Parameter]:
    """Parameters a method edits: ``attn2`` (cross-attention only), ``non-attn2`` (ESD-u), ``unet`` (all)."""
    params = dict(unet.named_parameters())
    if which == "attn2":
        chosen = {n: p for n, p in params.items() if ".attn2." in n}
    elif which == "attn2-kv":  # the text-side projections only: the edit is a function of the prompt
        chosen = {n: p for n, p in params.items() if ".attn2.to_k." in n or ".attn2.to_v." in n}
    elif which == "attn2-qk":  # where attention is decided: the only weights FMN's own loss reaches
        chosen = {n: p for n, p in params.items() if ".attn2.to_q." in n or ".attn2.to_k." in n}
    elif which == "non-attn2":
        chosen = {n: p for n, p in params.items() if ".attn2." not in n}
    elif which == "unet":
        chosen = params
    else:
        raise ObliviateError(f"unknown trainable set {which!r} (choose from {', '.join(TRAINABLE_SETS)})")
    if not chosen:
        raise ObliviateError(f"the UNet has no parameters in set {which!r}")
    return chosen


@contextmanager
def editing(model: Model, which: str, rank: int = 4) -> Iterator[list[torch.nn.Parameter]]:
    """Make the chosen set trainable for the ``with`` block; afterwards the model is restored.

    Yields the parameters to optimise. Call :func:`take_patch` inside the block to capture the edit.
    """
    unet = model.pipe.unet
    if which == "lora":
        from peft import LoraConfig

        had_adapters = bool(getattr(unet, "peft_config", None))
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=list(LORA_TARGETS)), adapter_name="obliviate")
        params = [p for n, p in unet.named_parameters() if "lora_" in n]
        for p in params:
            p.requires_grad_(True)
        try:
            yield params
        finally:
            if had_adapters:  # the user's own adapters stay; only ours goes
                unet.delete_adapters("obliviate")
            else:  # remove peft's wrapper layers too, so parameter names (and the fingerprint) are as before
                unet.unload_lora()
        return
    chosen = trainable_parameters(unet, which)
    originals = {n: p.detach().clone() for n, p in chosen.items()}
    for p in chosen.values():
        p.requires_grad_(True)
    unet._obliviate_originals = originals
    try:
        yield list(chosen.values())
    finally:
        with torch.no_grad():
            for n, p in chosen.items():
                p.requires_grad_(False)
                p.copy_(originals[n])
        del unet._obliviate_originals


def take_patch(model: Model, which: str, metadata: dict) -> Patch:
    """The edit made so far inside :func:`editing`, as a Patch (deltas, or LoRA factors)."""
    unet = model.pipe.unet
    meta = {"base_fingerprint": model.fingerprint, **metadata}
    if which == "lora":
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(unet, adapter_name="obliviate")
        tensors = {}
        for key, value in state.items():
            module = key.replace(".lora_A.weight", "").replace(".lora_B.weight", "")
            kind = "lora_down" if ".lora_A." in key else "lora_up"
            tensors[f"{kind}.unet.{module}"] = value.detach().float().cpu().clone()
        return Patch(tensors, {**meta, "lora_scale": 1.0})
    originals = unet._obliviate_originals
    return patch_from_weights(model.pipe, {("unet", n): t for n, t in originals.items()}, meta)


def encode_prompts(model: Model, prompts: list[str]) -> torch.Tensor:
    """Text-encoder outputs (B, L, d) of ``prompts``, padded to the tokenizer's length, without gradients."""
    tok = model.pipe.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(model.pipe.device)
    with torch.no_grad():
        return model.pipe.text_encoder(ids).last_hidden_state


def config_dict(cfg) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}


def fmn_prompt(category: str, phrase: str) -> str:
    """FMN's prompts: "a photo in the style of X" for styles, "a photo of X" otherwise."""
    return f"a photo in the style of {phrase}" if category == "style" else f"a photo of {phrase}"


def load_image_folder(folder: str | Path, size: int) -> np.ndarray:
    """Images of a concept supplied by the user, resized to the model's resolution."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ObliviateError(f"--images {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
    if not files:
        raise ObliviateError(f"--images {folder} contains no images (png, jpg, webp, bmp)")
    out = []
    for f in files:
        try:
            img = Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC)
        except OSError as exc:
            raise ObliviateError(f"cannot read image {f}: {exc}") from None
        out.append(np.asarray(img))
    return np.stack(out)


def concept_images(model: Model, concept: str, prompts: list[str], source: str | None, n: int,
                   seed: int) -> np.ndarray:
    """Images of the concept: rendered by the world, generated by the base model, or a user folder."""
    size = model.pipe.unet.config.sample_size * model.pipe.vae_scale_factor
    if source not in (None, "world", "generate"):
        return load_image_folder(source, size)
    if source == "world" or (source is None and model.is_world):
        if not model.is_world:
            raise ObliviateError("--images world needs --model world")
        from ..world import domain

        rng = np.random.default_rng(seed + 104729)
        try:
            wc = domain.concept_by_name(concept)
        except KeyError as exc:
            raise ObliviateError(str(exc).strip("'\"")) from None
        return domain.render_batch([domain.scene_for(wc, rng) for _ in range(n)])
    from ..generate import generate, image_seeds

    return generate(model, [prompts[i % len(prompts)] for i in range(n)], image_seeds(seed + 1, n),
                    progress=False)
