"""Diffusion primitives every method and attack shares: seeds, latents, noising, targets, sampling.

Randomness comes from CPU generators and is moved to the model's device (as diffusers' ``randn_tensor``
does), so a seed gives the same numbers on every device. Noising and training targets use a
``DDPMScheduler`` built from the pipeline's own scheduler config (whatever sampler the pipeline ships, the
training noise schedule is the same); partial sampling uses its own ``DDIMScheduler`` from the same config,
so methods never depend on the sampler a pipeline happens to ship (PNDM, Euler, ...).

Families trained by flow matching (SD3, Flux) get :class:`FlowMatching` instead: the same calls (``add_noise``,
:func:`training_target`, :func:`predicted_x0`, :func:`denoising_to`) on the straight path from data to noise,
and an Euler partial sampler on the sigmas their own scheduler sets. Every noising here is
``x_t = a_t z0 + s_t noise`` (:func:`coefficients`), so a method written once runs on both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

from .errors import ObliviateError
from .families import Conditioning, denoiser, family_of

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
    shift = getattr(vae.config, "shift_factor", None) or 0.0  # SD3's and Flux's VAEs centre their latents
    return ((torch.cat(parts) - shift) * vae.config.scaling_factor).to(device=model.device, dtype=model.dtype)


def latent_shape(pipe, batch: int) -> tuple[int, int, int, int]:
    """(batch, channels, height, width) of the latents the family's pipeline samples at its default size."""
    return family_of(pipe).latent_shape(pipe, batch)


def image_size(pipe) -> int:
    return latent_shape(pipe, 1)[-1] * pipe.vae_scale_factor


# ------------------------------------------------------------------------------------------------- training


class FlowMatching:
    """The rectified-flow path SD3 and Flux are trained on (Esser et al. 2024):

        x_t = (1 - sigma) z0 + sigma noise,   sigma = t / T,   target v = noise - z0,

    where t is the timestep the denoiser reads (the pipeline's ``sigma * 1000``; Flux's family passes sigma),
    drawn as integers in [1, T] (:func:`timestep_range`: at sigma = 0 no output denoises anything). Sigmas are
    drawn uniformly: the logit-normal density SD3 was trained with weights the middle of the path more, which an
    edit's loss need not copy."""

    def __init__(self, config) -> None:
        self.config = config  # the pipeline's scheduler config: num_train_timesteps, shift, ...

    def sigmas(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float32) / self.config.num_train_timesteps

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = coefficients(self, t.to(z0.device))
        return (a * z0.float() + s * noise.float()).to(z0.dtype)


Schedule = DDPMScheduler | FlowMatching


def training_scheduler(pipe) -> Schedule:
    """The training noise schedule of the pipeline (betas and prediction type, or the flow-matching path),
    whatever sampler it ships."""
    if family_of(pipe).objective == "flow":
        return FlowMatching(pipe.scheduler.config)
    return DDPMScheduler.from_config(pipe.scheduler.config)


def coefficients(sched: Schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t), float32 and shaped (B, 1, 1, 1), with x_t = a_t z0 + s_t noise: (sqrt(abar_t), sqrt(1 - abar_t))
    for DDPM, (1 - sigma, sigma) for flow matching."""
    if isinstance(sched, FlowMatching):
        sigma = sched.sigmas(t).view(-1, 1, 1, 1)
        return 1 - sigma, sigma
    a = sched.alphas_cumprod.to(device=t.device, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    return a.sqrt(), (1 - a).sqrt()


def timestep_range(sched: Schedule) -> tuple[int, int]:
    """The training timesteps, both ends included: DDPM's indices 0 .. T-1; flow matching's 1 .. T."""
    total = sched.config.num_train_timesteps
    return (1, total) if isinstance(sched, FlowMatching) else (0, total - 1)


def random_timesteps(sched: Schedule, n: int, gen: torch.Generator, device) -> torch.Tensor:
    low, high = timestep_range(sched)
    return low + randint(high - low + 1, n, gen, device)


def timesteps_in(sched: Schedule, low: float, high: float, n: int, gen: torch.Generator, device) -> torch.Tensor:
    """``n`` random training timesteps in the fraction [low, high) of the schedule."""
    total = sched.config.num_train_timesteps
    first = int(low * total)
    last = max(first + 1, int(high * total))
    return (first + randint(last - first, n, gen, device)).long().clamp(*timestep_range(sched))


def timestep_at(sched: Schedule, level: float) -> int:
    """The training timestep at the fraction ``level`` of the schedule (1: the noisiest)."""
    low, high = timestep_range(sched)
    return min(max(int(level * sched.config.num_train_timesteps) - 1, low), high)


def add_noise(sched: Schedule, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = a_t z0 + s_t noise (:func:`coefficients`)."""
    return sched.add_noise(z0, noise, t)


def denoising_batch(sched: Schedule, latents: torch.Tensor, n: int, gen: torch.Generator) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ordinary denoising loss's draw: ``n`` clean latents of ``latents``, their noise and timesteps (in that
    order from ``gen``), and x_t; the loss is then ``|| f(x_t, t, y) - training_target(sched, z0, noise, t) ||^2``."""
    z0 = latents[randint(len(latents), n, gen, latents.device)]
    noise = randn(tuple(z0.shape), gen, z0)
    t = random_timesteps(sched, n, gen, latents.device)
    return z0, noise, t, add_noise(sched, z0, noise, t)


def noised(sched: Schedule, z0: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``z0`` noised to ``t`` with fresh noise from ``gen``."""
    return add_noise(sched, z0, randn(tuple(z0.shape), gen, z0), t)


# What the denoiser should predict for x_t made from (z0, noise), one function per prediction type.
TARGETS: dict[str, Callable[[Schedule, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "epsilon": lambda sched, z0, noise, t: noise,
    "v_prediction": lambda sched, z0, noise, t: sched.get_velocity(z0, noise, t),
    "sample": lambda sched, z0, noise, t: z0,
    "flow": lambda sched, z0, noise, t: noise - z0,
}

# The clean latent implied by an output ``out`` at x_t = a z0 + s noise (a, s: float32 coefficients of t).
X0: dict[str, Callable[..., torch.Tensor]] = {
    "epsilon": lambda out, x, a, s: (x - s * out) / a,
    "v_prediction": lambda out, x, a, s: a * x - s * out,
    "sample": lambda out, x, a, s: out,
    "flow": lambda out, x, a, s: x - s * out,
}


def _kind(sched: Schedule) -> str:
    kind = "flow" if isinstance(sched, FlowMatching) else sched.config.prediction_type
    if kind not in TARGETS:
        raise ObliviateError(f"unsupported prediction type {kind!r}")
    return kind


def training_target(sched: Schedule, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the denoiser should predict for x_t made from (z0, noise): noise, velocity, the sample itself, or
    the flow's velocity noise - z0."""
    return TARGETS[_kind(sched)](sched, z0, noise, t)


def predicted_x0(sched: Schedule, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by a denoiser output at (x_t, t), for any prediction type."""
    a, s = coefficients(sched, t.to(x_t.device))
    return X0[_kind(sched)](output.float(), x_t.float(), a, s)


def denoising_to(sched: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The output that denoises ``x_t`` (at ``t``) into ``x0``: the target of the noise that makes x_t from x0."""
    a, s = coefficients(sched, t.to(x_t.device))
    noise = (x_t.float() - a * x0.float()) / s
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


def partial_sampler(pipe, steps: int) -> DDIMScheduler | FlowMatchEulerDiscreteScheduler:
    """The sampler the methods' partial samples run, with ``steps`` timesteps set: DDIM built from the
    pipeline's scheduler config, or for flow matching the pipeline's own Euler scheduler (its shift included)."""
    family = family_of(pipe)
    if family.objective == "flow":
        sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        sched.set_timesteps(**{"num_inference_steps": steps, **family.sampler_options(pipe, steps)})
        return sched
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
def partial_sample(predict: Predict, sched: DDIMScheduler | FlowMatchEulerDiscreteScheduler, x: torch.Tensor,
                   cond: Conditioning, uncond: Conditioning, stop: int, guidance: float) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """Run the first ``stop`` sampler steps from ``x`` with classifier-free guidance; returns (x_t, t) where t
    is the timestep x_t now sits at (the next one the sampler would denoise)."""
    if not 0 <= stop < len(sched.timesteps):
        raise ValueError(f"stop must be in [0, {len(sched.timesteps)}), got {stop}")
    flow = isinstance(sched, FlowMatchEulerDiscreteScheduler)
    x = x if flow else x * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps[:stop]):
        inp = torch.cat([x, x]) if flow else sched.scale_model_input(torch.cat([x, x]), t)
        out = predict(inp, t.expand(len(inp)).to(x.device), Conditioning.cat([uncond, cond]))
        e_u, e_c = out.chunk(2)
        if flow:  # Euler along the velocity (the scheduler's own step keeps a position between calls)
            x = (x.float() + (sched.sigmas[i + 1] - sched.sigmas[i]) * guided(e_u, e_c, guidance).float()).to(x.dtype)
        else:
            x = sched.step(guided(e_u, e_c, guidance), t, x).prev_sample
    t = sched.timesteps[stop]
    return x, t.expand(len(x)).to(x.device)
