"""What every attack shares: the probe an attack returns, turning it into images, and the result's shape.

An attack is a config dataclass, an optional ``prepare(pipe, concept, cfg, catalog)`` that runs on the base
model (images of the concept, the base model's predictions: what an attacker brings along), and
``run(pipe, concept, cfg, catalog, prepared) -> Probe``, which searches against the model under test (its patch
and keys already in place) and returns a way to make images that should show the concept. The attack success
rate (ASR) is the share of those images in which the detector finds the concept; images are seeded like every
other generation, so a seed gives the same numbers.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from ..bench import Sampler
from ..generation import generate, image_seeds
from ..hiding.keys import Key, unlocked
from ..inversion import LearnedTokens, installed
from ..patch import Patch


def anchor_images(pipe, catalog, concept, n: int, seed: int, source: str | None = None) -> np.ndarray:
    """The images of ``concept`` an attack learns or starts from (one seed stream for every attack): ``source``
    None for the catalog's own (the world's renderings), "generate" for the model's generations from the
    concept's prompts, or a folder. Made on the base model, before any patch is applied."""
    from ..catalog import concept_images
    from ..diffusion import seed_stream

    return concept_images(catalog, pipe, concept, n, seed_stream(seed, f"anchors/{concept.name}"), source)


def prepare_anchors(pipe, concept, cfg, catalog) -> np.ndarray:
    """The ``prepare`` step of attacks that learn from images: ``cfg.anchors`` images from ``cfg.images``."""
    return anchor_images(pipe, catalog, concept, cfg.anchors, cfg.seed, cfg.images)


@dataclass
class Probe:
    """What an attack found. Text prompts (adversarial, implicit, or using learned tokens), or images to noise
    and complete (the completion probe)."""

    prompts: list[str]
    learned: LearnedTokens | None = None  # tokens installed while generating (concept inversion)
    init_images: np.ndarray | None = None  # completion: images of the concept to noise and denoise
    strengths: tuple[float, ...] = ()  # completion: fractions of the schedule to noise to
    neutral: str = ""  # completion: the prompt that denoises
    key: Key | Patch | None = None  # what a relearning attack learned, installed while generating
    checkpoints: list[tuple[int, float, Key | Patch]] = field(default_factory=list)  # (step, seconds, key so far)


def probe_images(pipe, probe: Probe, n: int, seed: int, sampler: Sampler) -> tuple[np.ndarray, list[str]]:
    """``n`` images per strength (completion) or ``n`` images over the prompts, cycled; with their labels."""
    if probe.init_images is not None:
        return _completions(pipe, probe, n, seed, sampler)
    prompts = [probe.prompts[i % len(probe.prompts)] for i in range(n)]
    learned = probe.key.applied(pipe, force=True) if isinstance(probe.key, Patch) else \
        unlocked(pipe, [probe.key] if probe.key is not None else [])
    with installed(pipe, probe.learned) if probe.learned is not None else nullcontext(), learned:
        images = generate(pipe, prompts, image_seeds(seed, n), sampler.steps, sampler.guidance, progress=False)
    return images, prompts


def _completions(pipe, probe: Probe, n: int, seed: int, sampler: Sampler) -> tuple[np.ndarray, list[str]]:
    import torch
    from PIL import Image

    from ..families import call_options, prompt_call
    from ..families import img2img as image_to_image
    from ..pipeline import quiet_diffusers

    img2img = image_to_image(pipe)
    out, labels = [], []
    starts = [Image.fromarray(probe.init_images[i % len(probe.init_images)]) for i in range(n)]
    for strength in probe.strengths:
        gens = [torch.Generator("cpu").manual_seed(s) for s in image_seeds(seed, n)]
        steps = max(sampler.steps, math.ceil(1 / strength))  # img2img runs int(steps * strength) of them: >= 1
        with quiet_diffusers():  # SDXL's img2img casts its VAE to float32 on every call and diffusers warns each time
            images = img2img(**prompt_call(pipe, [probe.neutral] * n), image=starts, strength=strength,
                             num_inference_steps=steps, guidance_scale=sampler.guidance, generator=gens,
                             output_type="np", **call_options(pipe)).images
        out.append(np.round(np.clip(images, 0, 1) * 255).astype(np.uint8))
        labels += [f"{probe.neutral!r} from the concept noised to {strength}"] * n
    return np.concatenate(out), labels


@dataclass
class AttackResult:
    """One attack on one concept: its ASR on the model under test, on the base model (its ceiling) and the rate
    with no attack (the concept's own prompts on the model under test)."""

    concept: str
    attack: str
    asr: float
    asr_base: float | None
    asr_no_attack: float
    n_images: int
    seconds: float
    prompts: list[str] | None = None  # the adversarial prompts, where the attack makes text
    details: dict = field(default_factory=dict)  # per-attack extras (e.g. ASR per completion strength)
    images: np.ndarray | None = field(default=None, repr=False)  # a few of the attack's images (not in JSON)
    clean_images: np.ndarray | None = field(default=None, repr=False)  # ... of the concept's own prompts
    asr_oracle: float | None = None  # the same attack on the oracle (the world that never saw the concept)

    def summary(self) -> str:
        """One line for a log: the ASR beside its ceiling (and on the oracle); for a learning attack, the
        steps it needed."""
        base = "n/a" if self.asr_base is None else f"{self.asr_base:.3f}"
        oracle = "" if self.asr_oracle is None else f", oracle {self.asr_oracle:.3f}"
        line = (f"{self.attack}: ASR {self.asr:.3f} (base model {base}{oracle}, no attack "
                f"{self.asr_no_attack:.3f}; {self.n_images} images, {self.seconds:.1f} s)")
        d = self.details
        if "steps_to_reach" not in d:
            return line
        line += (f"\n  reached {d['reach']} after {d['steps_to_reach']} steps ({d['seconds_to_reach']:.1f} s)"
                 if d["steps_to_reach"] is not None else f"\n  did not reach {d['reach']} within {d['budget']} steps")
        for who, name in (("base", "the base model"), ("oracle", "the oracle")):
            if f"{who}_steps_to_reach" in d:
                steps = d[f"{who}_steps_to_reach"]
                line += f"; on {name} after {steps} steps" if steps is not None else f"; not on {name}"
        return line

    def to_dict(self) -> dict:
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("images", "clean_images")}
