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

import torch

from ..bench import Concept
from ..catalog import Catalog
from ..diffusion import generator, latent_shape, partial_sampler, randint, randn, seed_stream, training_scheduler
from ..families import Conditioning, encode
from ..inversion import InversionConfig, invert
from ..patch import Patch
from ..progress import bar
from ..terms import distance, embedding_prompts, esd_point, esd_target, keep_bank, keep_rows, swap, training_prompts
from .configs import STEREOConfig
from .loop import Edit, LoopSettings, make_patch, train

__all__ = ["STEREOConfig", "fit"]


def fit(pipe, concepts: list[Concept], cfg: STEREOConfig, catalog: Catalog) -> Patch:
    """Stage one collects adversarial embeddings; stage two erases the concepts and all of them at once."""
    gen = generator(cfg.seed)
    pairs = [(c, p) for c in concepts for p in training_prompts(c, cfg.train_on)]
    prompts = encode(pipe, [p for _, p in pairs])
    anchors = encode(pipe, [swap(p, c, cfg.anchor) for c, p in pairs])
    uncond = encode(pipe, [""]).expand(cfg.batch_size)
    sampler = partial_sampler(pipe, cfg.ddim_steps)
    images = {c.name: catalog.images(pipe, c, cfg.inversion_images, seed_stream(cfg.seed, f"stereo/{c.name}"))
              for c in concepts}

    def erasure(edit: Edit, inputs: Conditioning, stands: Conditioning, anchor: Conditioning | None) -> torch.Tensor:
        """ESD's loss on ``inputs`` (prompts to erase), each with the concept prompt it stands for and (stage
        two) an anchor: eps(∅) - eta (eps(c) - eps(∅)) [+ eta_a (eps(a) - eps(∅))]."""
        pick = randint(len(inputs), cfg.batch_size, gen, inputs.device)
        cond = stands[pick]
        start = randn(latent_shape(pipe, cfg.batch_size), gen, cond.states)  # STEREO draws its noise first
        x_t, t = esd_point(pipe, edit.frozen, sampler, cond, uncond, gen, cfg.start_guidance, start=start)
        goal, e_uncond, _, e_anchor = esd_target(edit.frozen, x_t, t, cond, uncond, cfg.eta,
                                                 *([(x_t, t, anchor[pick])] if anchor is not None else []))
        if e_anchor:
            goal = goal + cfg.anchor_eta * (e_anchor[0] - e_uncond)
        return distance(edit.edited(x_t, t, inputs[pick]), goal)

    # stage one: search on a scratch edit
    found: list[tuple[int, torch.Tensor]] = []  # (index of the concept's first prompt, embedding rows)
    inputs, stands = prompts, prompts  # what to erase, and the concept prompt each stands for
    scratch = Edit(pipe, cfg.trainable, seed=cfg.seed)
    for i in bar(range(cfg.iterations), desc="stereo search", unit="round", enabled=cfg.progress):
        current = scratch.tensors()  # the scratch edit so far: each concept's inversion runs against it
        for k, c in enumerate(concepts):
            with Patch(current).applied(pipe, force=True) if current else nullcontext():
                learned = invert(pipe, images[c.name], InversionConfig(
                    n_tokens=cfg.inversion_tokens, steps=cfg.inversion_steps, seed=seed_stream(cfg.seed, f"{i}/{k}"),
                    progress=False))
            found.append((next(j for j, (cc, _) in enumerate(pairs) if cc is c), learned.embeddings))
        inputs = Conditioning.cat([prompts, embedding_prompts(pipe, [rows for _, rows in found])])
        stands = Conditioning.cat([prompts, prompts[[j for j, _ in found]]])
        settings = LoopSettings(steps=cfg.search_steps, lr=cfg.lr, seed=cfg.seed, progress=False)
        train(scratch, lambda step, i=inputs, s=stands: erasure(scratch, i, s, None), settings, "stereo search")

    # stage two: erase once, from the original model, the same prompts and embeddings
    edit = Edit(pipe, cfg.trainable, seed=cfg.seed)
    anchor = Conditioning.cat([anchors, anchors[[j for j, _ in found]]])
    bank = keep_bank(pipe, catalog, concepts, cfg.preserve, cfg.seed) if cfg.preserve_weight else None
    sched = training_scheduler(pipe)

    def loss(step: int) -> torch.Tensor:
        value = erasure(edit, inputs, stands, anchor)
        if bank is None:
            return value
        kept = keep_rows(bank, sched, cfg.batch_size, gen)
        return value + cfg.preserve_weight * distance(edit.edited(kept.x, kept.t, kept.cond),
                                                      edit.frozen(kept.x, kept.t, kept.cond))

    settings = LoopSettings(steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress)
    train(edit, loss, settings, f"stereo {', '.join(c.name for c in concepts)}")
    return make_patch(edit.tensors(), "stereo", concepts, cfg, adversarial_embeddings=len(found))
