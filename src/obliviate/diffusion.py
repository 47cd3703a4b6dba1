"""Diffusion primitives every method and attack shares: seeds, latents, noising, targets, sampling.

Randomness comes from CPU generators and is moved to the model's device (as diffusers' ``randn_tensor``
does), so a seed gives the same numbers on every device. Noising and training targets use a
``DDPMScheduler`` built from the pipeline's own scheduler config (whatever sampler the pipeline ships, the
training noise schedule is the same); partial sampling uses its own ``DDIMScheduler`` from the same config,
so methods never depend on the sampler a pipeline happens to ship (PNDM, Euler, ...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from .errors import ObliviateError
from .families import Conditioning, denoiser

# ----------------------------------------------------------------------------------------------- randomness


def seed_stream(seed: int, name: str) -> int:
    """A seed of its own for each named use of ``seed`` (images of a concept, noise, ...), so streams never
    overlap and adding a stream does not shift the others."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def generator(seed: int, name: str | None = None) -> torch.Generator:
    """A CPU generator for ``seed`` (or its stream ``name``)."""
    return torch.Generator("cpu").manual_seed(seed if name is None else seed_stream(seed, name))


def randn(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise with ``like``'s device and dtype, drawn on the CPU so every device agrees."""
    return randn_tensor(shape, generator=gen, device=like.device, dtype=like.dtype)


def randint(high: int, n: int, gen: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` integers in [0, high), drawn on the CPU, returned on ``device``."""
    return torch.randint(0, high, (n,), generator=gen).to(device)


# -------------------------------------------------------------------------------------------------- latents


@torch.no_grad()
def images_to_latents(pipe, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """uint8 (N, H, W, 3) images -> scaled VAE latents (posterior means), on the denoiser's device and dtype."""
    vae, model = pipe.vae, denoiser(pipe)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    parts = [vae.encode(x[i:i + batch_size].to(vae.device, vae.dtype)).latent_dist.mean
             for i in range(0, len(x), batch_size)]
    return (torch.cat(parts) * vae.config.scaling_factor).to(device=model.device, dtype=model.dtype)


def latent_shape(pipe, batch: int) -> tuple[int, int, int, int]:
    cfg = denoiser(pipe).config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    return batch, cfg.in_channels, size, size


def image_size(pipe) -> int:
    return latent_shape(pipe, 1)[-1] * pipe.vae_scale_factor


# ------------------------------------------------------------------------------------------------- training


def training_scheduler(pipe) -> DDPMScheduler:
    """The training noise schedule of the pipeline (betas, prediction type), whatever sampler it ships."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


def random_timesteps(sched: DDPMScheduler, n: int, gen: torch.Generator, device) -> torch.Tensor:
    return randint(sched.config.num_train_timesteps, n, gen, device)


def add_noise(sched: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) z0 + sqrt(1 - a_t) noise."""
    return sched.add_noise(z0, noise, t)


def denoising_batch(sched: DDPMScheduler, latents: torch.Tensor, n: int, gen: torch.Generator) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ordinary denoising loss's draw: ``n`` clean latents of ``latents``, their noise and timesteps (in that
    order from ``gen``), and x_t; the loss is then ``|| f(x_t, t, y) - training_target(sched, z0, noise, t) ||^2``."""
    z0 = latents[randint(len(latents), n, gen, latents.device)]
    noise = randn(tuple(z0.shape), gen, z0)
    t = random_timesteps(sched, n, gen, latents.device)
    return z0, noise, t, add_noise(sched, z0, noise, t)


def noised(sched: DDPMScheduler, z0: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``z0`` noised to ``t`` with fresh noise from ``gen``."""
    return add_noise(sched, z0, randn(tuple(z0.shape), gen, z0), t)


def _velocity(sched: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return sched.get_velocity(z0, noise, t)


# What the denoiser should predict for x_t made from (z0, noise), one function per prediction type.
TARGETS: dict[str, Callable[[DDPMScheduler, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "epsilon": lambda sched, z0, noise, t: noise,
    "v_prediction": _velocity,
    "sample": lambda sched, z0, noise, t: z0,
}

# The clean latent implied by an output ``out`` at x_t, given sqrt(a_t) and sqrt(1 - a_t) (float32).
X0 = {
    "epsilon": lambda out, x, a, s: (x - s * out) / a,
    "v_prediction": lambda out, x, a, s: a * x - s * out,
    "sample": lambda out, x, a, s: out,
}


def _kind(sched: DDPMScheduler) -> str:
    kind = sched.config.prediction_type
    if kind not in TARGETS:
        raise ObliviateError(f"unsupported prediction type {kind!r}")
    return kind


def training_target(sched: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the denoiser should predict for x_t made from (z0, noise): noise, velocity or the sample itself."""
    return TARGETS[_kind(sched)](sched, z0, noise, t)


def predicted_x0(sched: DDPMScheduler, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by a denoiser output at (x_t, t), for any prediction type."""
    a = sched.alphas_cumprod.to(device=x_t.device, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    return X0[_kind(sched)](output.float(), x_t.float(), a.sqrt(), (1 - a).sqrt())


def denoising_to(sched: DDPMScheduler, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The output that denoises ``x_t`` (at ``t``) into ``x0``: the target of the noise that makes x_t from x0."""
    a = sched.alphas_cumprod.to(device=x_t.device, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    noise = (x_t.float() - a.sqrt() * x0.float()) / (1 - a).sqrt()
    return training_target(sched, x0.float(), noise, t)


def guided(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (affine, so it holds for epsilon and velocity outputs alike)."""
    return uncond + scale * (cond - uncond)


# ------------------------------------------------------------------------------------------------- sampling

Predict = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]  # (x, t, cond) -> denoiser output


def predict_each(predict: Predict, *calls: tuple[torch.Tensor, torch.Tensor, Conditioning]) -> list[torch.Tensor]:
    """``predict`` on several (x, t, cond) groups in one batched call, split back per group: at the small
    batches the methods train on, a denoiser call's cost is mostly per call, not per image."""
    sizes = [len(x) for x, _, _ in calls]
    x = torch.cat([x for x, _, _ in calls])
    t = torch.cat([t.expand(len(x_)) for x_, t, _ in calls])
    cond = Conditioning.cat([c.expand(len(x_)) for x_, _, c in calls])
    return list(predict(x, t, cond).split(sizes))


def ddim_scheduler(pipe, steps: int) -> DDIMScheduler:
    """A DDIM sampler built from the pipeline's scheduler config, with ``steps`` timesteps set."""
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    return sched


def random_stop(steps: int, gen: torch.Generator, include_last: bool = False) -> int:
    """How many of ``steps`` sampler steps to run before training at the x_t reached.

    Stopping after the last step but one leaves x_t at the final timestep (t = 1 with SD's schedule): a nearly
    clean latent, where a noise prediction says almost nothing about the prompt; ``include_last`` allows it.
    """
    return int(randint(steps if include_last or steps == 1 else steps - 1, 1, gen)[0])


@torch.no_grad()
def partial_sample(predict: Predict, sched: DDIMScheduler, x: torch.Tensor, cond: Conditioning,
                   uncond: Conditioning, stop: int, guidance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the first ``stop`` DDIM steps from ``x`` with classifier-free guidance; returns (x_t, t) where t is
    the timestep x_t now sits at (the next one the sampler would denoise)."""
    if not 0 <= stop < len(sched.timesteps):
        raise ValueError(f"stop must be in [0, {len(sched.timesteps)}), got {stop}")
    x = x * sched.init_noise_sigma
    for t in sched.timesteps[:stop]:
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        out = predict(inp, t.expand(len(inp)).to(x.device), Conditioning.cat([uncond, cond]))
        e_u, e_c = out.chunk(2)
        x = sched.step(guided(e_u, e_c, guidance), t, x).prev_sample
    t = sched.timesteps[stop]
    return x, t.expand(len(x)).to(x.device)
