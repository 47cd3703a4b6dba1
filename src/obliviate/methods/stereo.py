"""STEREO (Srivatsan et al., "STEREO: A Two-Stage Framework for Adversarially Robust Concept Erasing from
Text-to-Image Diffusion Models", CVPR 2025): search thoroughly, then erase once.

Stage one (Search Thoroughly Enough) alternates, ``iterations`` times, on a scratch edit theta_i:

    v_i = argmin_v  E || eps_theta_i(x_t, "a photo of <v>", t) - eps ||^2     (concept inversion on images of c)
    theta_i+1 = ESD on theta_i against c and every v_1 .. v_i

and keeps only the embeddings v_i: each is a way back to the concept that the previous erasure left open.
Stage two (Robustly Erase Once) starts again from the original model and erases the concept's prompts and
every v_i at once with the compositional target, which steers towards an anchor concept a while steering
away from c, so that what the prompts draw afterwards is the anchor, not damage:

    || eps_theta(x_t, p, t) - [ eps*({}) + eta_a (eps*(a) - eps*({})) - eta (eps*(c) - eps*({})) ] ||^2

for p in {c's prompts, v_1 .. v_K}, eps*(.) the original model at (x_t, ., t), a the concept's prompt with
its words replaced by ``anchor`` ("" by default: the prompt without the concept). ``preserve_weight`` > 0 adds
AdvUnlearn's retain term on the other concepts (not in the paper; 0 by default).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import (
    ddim_scheduler,
    encode_prompts,
    generator,
    latent_shape,
    noised,
    partial_sample,
    predict_each,
    randint,
    randn,
    random_stop,
    random_timesteps,
    seed_stream,
    training_scheduler,
)
from ..errors import ObliviateError
from ..inversion import InversionConfig, LearnedTokens, installed, invert
from ..patch import Patch
from ..progress import bar
from .esd import negative_guidance, training_prompts
from .keep import keep_bank
from .loop import Edit, LoopSettings, make_patch, train
from .uce import replace_words


@dataclass
class STEREOConfig:
    iterations: int = 3  # stage one: inversion + erasure rounds (embeddings collected)
    search_steps: int = 50  # ESD steps per stage-one round
    inversion_steps: int = 150  # textual-inversion steps per round (as the concept-inversion attack)
    inversion_tokens: int = 4
    inversion_images: int = 32
    steps: int = 150  # stage two
    lr: float = 1e-3
    batch_size: int = 4
    eta: float = 1.0
    anchor_eta: float = 1.0
    anchor: str = ""  # the anchor concept's word; "" = the concept's prompt without it
    ddim_steps: int = 10
    start_guidance: float = 3.0
    trainable: str = "attn2"
    preserve_weight: float = 0.0
    preserve: tuple[str, ...] | None = None
    train_on: str = "named"
    seed: int = 0
    progress: bool = True


class _Erasure:
    """The ESD-style loss both stages share, on a set of prompt encodings with their own targets."""

    def __init__(self, pipe, cfg: STEREOConfig, edit: Edit, gen: torch.Generator) -> None:
        self.pipe, self.cfg, self.edit, self.gen = pipe, cfg, edit, gen
        self.sampler = ddim_scheduler(pipe, cfg.ddim_steps)
        self.uncond = encode_prompts(pipe, [""]).expand(cfg.batch_size, -1, -1)

    def loss(self, inputs: torch.Tensor, concept: torch.Tensor, anchor: torch.Tensor | None) -> torch.Tensor:
        """``inputs`` (prompts to erase), each with the concept prompt it stands for and (stage two) an anchor."""
        cfg, device = self.cfg, self.pipe.unet.device
        pick = randint(len(inputs), cfg.batch_size, self.gen, device)
        cond = concept[pick]
        with torch.no_grad():
            start = randn(latent_shape(self.pipe, cfg.batch_size), self.gen, cond)
            x_t, t = partial_sample(self.edit.frozen, self.sampler, start, cond, self.uncond,
                                    random_stop(cfg.ddim_steps, self.gen), cfg.start_guidance)
            calls = [(x_t, t, self.uncond), (x_t, t, cond)] + ([(x_t, t, anchor[pick])] if anchor is not None else [])
            e_uncond, e_cond, *e_anchor = predict_each(self.edit.frozen, *calls)
            goal = negative_guidance(e_uncond, e_cond, cfg.eta)
            if e_anchor:
                goal = goal + cfg.anchor_eta * (e_anchor[0] - e_uncond)
        return F.mse_loss(self.edit.edited(x_t, t, inputs[pick]).float(), goal.float())


def fit(pipe, concepts: list[Concept], cfg: STEREOConfig, catalog: Catalog) -> Patch:
    """Stage one collects adversarial embeddings; stage two erases the concepts and all of them at once."""
    if cfg.iterations < 0:
        raise ObliviateError(f"iterations must be at least 0, got {cfg.iterations}")
    gen = generator(cfg.seed)
    pairs = [(c, p) for c in concepts for p in training_prompts(c, cfg.train_on)]
    prompts = encode_prompts(pipe, [p for _, p in pairs])
    anchors = encode_prompts(pipe, [replace_words(p, c, cfg.anchor) for c, p in pairs])
    images = {c.name: catalog.images(pipe, c, cfg.inversion_images, seed_stream(cfg.seed, f"stereo/{c.name}"))
              for c in concepts}

    # stage one: search on a scratch edit
    found: list[tuple[int, torch.Tensor]] = []  # (index of the concept's first prompt, embedding rows)
    inputs, stands = prompts, prompts  # what to erase, and the concept prompt each stands for
    scratch = Edit(pipe.unet, cfg.trainable, seed=cfg.seed)
    search = _Erasure(pipe, cfg, scratch, gen)
    for i in bar(range(cfg.iterations), desc="stereo search", unit="round", enabled=cfg.progress):
        current = scratch.tensors()  # the scratch edit so far: each concept's inversion runs against it
        for k, c in enumerate(concepts):
            with Patch(current).applied(pipe, force=True) if current else nullcontext():
                learned = invert(pipe, images[c.name], InversionConfig(
                    n_tokens=cfg.inversion_tokens, steps=cfg.inversion_steps, seed=seed_stream(cfg.seed, f"{i}/{k}"),
                    progress=False))
            found.append((next(j for j, (cc, _) in enumerate(pairs) if cc is c), learned.embeddings))
        inputs = torch.cat([prompts, adversarial_prompts(pipe, found)])
        stands = torch.cat([prompts, prompts[[j for j, _ in found]]])
        settings = LoopSettings(steps=cfg.search_steps, lr=cfg.lr, seed=cfg.seed, progress=False)
        train(scratch, lambda step, i=inputs, s=stands: search.loss(i, s, None), settings, "stereo search")

    # stage two: erase once, from the original model, the same prompts and embeddings
    edit = Edit(pipe.unet, cfg.trainable, seed=cfg.seed)
    erase = _Erasure(pipe, cfg, edit, gen)
    anchor = torch.cat([anchors, anchors[[j for j, _ in found]]])
    bank = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed) if cfg.preserve_weight else None
    sched = training_scheduler(pipe)

    def loss(step: int) -> torch.Tensor:
        value = erase.loss(inputs, stands, anchor)
        if bank is None:
            return value
        k = randint(len(bank.cond), cfg.batch_size, gen, pipe.unet.device)
        t = random_timesteps(sched, cfg.batch_size, gen, pipe.unet.device)
        x = noised(sched, bank.latents[k], t, gen) if bank.latents is not None else \
            randn(latent_shape(pipe, cfg.batch_size), gen, bank.cond)
        kept = F.mse_loss(edit.edited(x, t, bank.cond[k]).float(), edit.frozen(x, t, bank.cond[k]).float())
        return value + cfg.preserve_weight * kept

    settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress)
    train(edit, loss, settings, f"stereo {', '.join(c.name for c in concepts)}")
    return make_patch(edit.tensors(), "stereo", concepts, cfg, adversarial_embeddings=len(found))


def adversarial_prompts(pipe, found: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """Encodings of "a photo of <v_i>" for every embedding found (a text-encoder copy that knows them)."""
    n = found[0][1].shape[0]
    names = [f"<stereo{i}_{j}>" for i in range(len(found)) for j in range(n)]
    with installed(pipe, LearnedTokens(names, torch.cat([rows for _, rows in found]))):
        return encode_prompts(pipe, ["a photo of " + "".join(names[i * n:(i + 1) * n]) for i in range(len(found))])
