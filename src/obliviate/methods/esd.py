"""Erased Stable Diffusion (Gandikota et al., ICCV 2023): negative-guidance fine-tuning.

Train theta' so that, on latents x_t that theta' itself reaches by partially denoising the concept prompt c,

    eps_theta'(x_t, c, t)  ~  eps_theta(x_t, {}, t) - eta * [eps_theta(x_t, c, t) - eps_theta(x_t, {}, t)]

(theta frozen, eta = 1): the model learns to steer *away* from the concept whenever it is asked for it.
ESD-x edits attn2 only (IDs, objects, styles: the edit stays tied to the prompt); ESD-u edits everything
but attn2 (nudity and global concepts: the edit holds whatever words reach the concept).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ObliviateError
from ..patch import Patch
from ..pipeline import Model
from .common import config_dict, editing, encode_prompts, take_patch
from .concepts import Target, resolve_target


@dataclass
class ESDConfig:
    """Public code: 200 iterations, lr 5e-5, DDIM 50 steps, start guidance 3 (SD). World defaults differ."""

    steps: int = 100
    lr: float = 5e-4
    batch_size: int = 4
    eta: float = 1.0
    ddim_steps: int = 10  # the world's sampler uses 25; 10 reaches the same x_t distribution for a third of the cost
    start_guidance: float = 3.0
    trainable: str = "attn2"  # esd-x; esd-u uses "non-attn2"
    seed: int = 0
    progress: bool = True


@torch.no_grad()
def _partial_sample(model: Model, cond: torch.Tensor, uncond: torch.Tensor, stop: int, cfg: ESDConfig,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM from noise under ``cond`` with the model being edited, stopping after ``stop`` steps."""
    pipe = model.pipe
    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(cfg.ddim_steps)
    unet = pipe.unet
    shape = (cond.shape[0], unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = torch.randn(shape, generator=gen).to(cond) * sched.init_noise_sigma
    for t in sched.timesteps[:stop]:
        eps = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample
        e_u, e_c = eps.chunk(2)
        x = sched.step(e_u + cfg.start_guidance * (e_c - e_u), t, x).prev_sample
    return x, sched.timesteps[stop]


def training_prompts(target: Target) -> list[str]:
    """The concept by its own name only (as ESD trains on "nudity" or an artist's name): prompts that reach it
    through synonyms are left for the evaluation, so they measure generalisation, not memorisation."""
    named = [p for p in target.prompts if target.name in p.split()]
    return list(dict.fromkeys([target.name, *named]))


def fit(model: Model, concepts: list[str], cfg: ESDConfig, method_name: str | None = None) -> Patch:
    """Erase ``concepts`` by negative guidance; the edited parameter set follows ``cfg.trainable``."""
    start = time.time()
    if not concepts:
        raise ObliviateError("no concept to erase")
    targets = [resolve_target(model, c) for c in concepts]
    pipe = model.pipe
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    frozen = copy.deepcopy(pipe.unet).requires_grad_(False)
    if pipe.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise ObliviateError("ESD as specified needs an epsilon-prediction model (this one predicts "
                             f"{pipe.scheduler.config.prediction_type})")
    uncond1 = encode_prompts(model, [""])
    prompts = [p for t in targets for p in training_prompts(t)]
    conds = encode_prompts(model, prompts)
    with editing(model, cfg.trainable) as params:
        opt = torch.optim.Adam(params, lr=cfg.lr)
        name = method_name or ("esd-x" if cfg.trainable == "attn2" else "esd-u")
        for step in tqdm(range(cfg.steps), desc=f"{name} {', '.join(concepts)}", disable=not cfg.progress):
            idx = torch.randint(len(prompts), (cfg.batch_size,), generator=gen)
            cond = conds[idx]
            uncond = uncond1.expand(len(idx), -1, -1)
            stop = int(torch.randint(0, cfg.ddim_steps - 1, (1,), generator=gen))
            x_t, t = _partial_sample(model, cond, uncond, stop, cfg, gen)
            with torch.no_grad():
                e0 = frozen(x_t, t, uncond).sample
                ep = frozen(x_t, t, cond).sample
                goal = e0 - cfg.eta * (ep - e0)
            en = pipe.unet(x_t, t, cond).sample
            loss = F.mse_loss(en, goal)
            if not torch.isfinite(loss):
                raise ObliviateError(f"loss became {loss.item()} at step {step}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        meta = {"method": name, "concepts": [t.name for t in targets], "config": config_dict(cfg),
                "seconds": round(time.time() - start, 2)}
        return take_patch(model, cfg.trainable, meta)
