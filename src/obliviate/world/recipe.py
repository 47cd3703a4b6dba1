"""The recipe that trains the world from scratch: tokenizer, VAE, detector, then UNet + text encoder.

Deterministic under a seed (fixed thread count, seeded torch and numpy generators). The default budgets
fit about 25 minutes on a 2-core CPU; the shipped weights under ``obliviate/world/weights`` were made by
``obliviate world build --seed 0``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline

from ..fingerprint import fingerprint
from ..progress import bar as progress_bar
from . import domain
from .models import ArchConfig, Detector, make_scheduler, make_text_encoder, make_unet, make_vae
from .tokenizer import build_tokenizer


@dataclass
class BuildConfig:
    """Budgets of each training stage; the defaults are the shipped world's."""

    seed: int = 0
    n_images: int = 24000
    vae_steps: int = 800
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    detector_steps: int = 1500
    detector_batch: int = 128
    unet_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    uncond_rate: float = 0.1
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    arch: ArchConfig = field(default_factory=ArchConfig)
    n_heldout: int = 2000
    threads: int = 2


GENERATION_DEFAULTS = {"num_inference_steps": 20, "guidance_scale": 5.0}


def training_scenes(cfg: BuildConfig, rng: np.random.Generator) -> list[domain.Scene]:
    """The recipe's training scenes: the first draws of its seeded generator (an oracle draws the same ones and
    leaves some out)."""
    return [domain.random_scene(rng) for _ in range(cfg.n_images)]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _render_chunk(scenes: list[domain.Scene]) -> np.ndarray:
    return domain.render_batch(scenes)


def render_parallel(scenes: list[domain.Scene], workers: int) -> np.ndarray:
    """Render scenes on ``workers`` processes (rendering is deterministic per scene)."""
    if workers <= 1 or len(scenes) < 512:
        return domain.render_batch(scenes)
    chunks = [scenes[i:i + 512] for i in range(0, len(scenes), 512)]
    with get_context("fork").Pool(workers) as pool:  # before any torch compute: fork is safe
        return np.concatenate(pool.map(_render_chunk, chunks))


def _cosine_lr(step: int, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_vae(images: torch.Tensor, cfg: BuildConfig, gen: torch.Generator, bar: bool) -> tuple:
    """Train the AutoencoderKL on rendered images; returns (vae, scaling_factor)."""
    vae = make_vae(cfg.arch)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, cfg.vae_steps))
    for _ in progress_bar(range(cfg.vae_steps), desc="vae", unit="step", enabled=bar, leave=True):
        x = images[torch.randint(len(images), (cfg.vae_batch,), generator=gen)]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + cfg.vae_kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
    vae.eval()
    with torch.no_grad():
        sample = torch.cat([vae.encode(images[i:i + 256]).latent_dist.mean
                            for i in range(0, min(2048, len(images)), 256)])
    scaling = float(1.0 / sample.std())
    vae.register_to_config(scaling_factor=scaling)
    return vae, scaling


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, bar: bool) -> torch.Tensor:
    out = [vae.encode(images[i:i + 256]).latent_dist.mean
           for i in progress_bar(range(0, len(images), 256), desc="encode", unit="batch", enabled=bar, leave=True)]
    return torch.cat(out) * vae.config.scaling_factor


def train_detector(images: torch.Tensor, labels: dict[str, torch.Tensor], recon: torch.Tensor,
                   cfg: BuildConfig, gen: torch.Generator, bar: bool) -> Detector:
    """Train the concept detector; half of each batch is VAE-reconstructed so it reads generated images."""
    det = Detector()
    opt = torch.optim.AdamW(det.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, cfg.detector_steps))
    n_rec = len(recon)
    for _ in progress_bar(range(cfg.detector_steps), desc="detector", unit="step", enabled=bar, leave=True):
        idx = torch.randint(len(images), (cfg.detector_batch,), generator=gen)
        x = images[idx].clone()
        use_rec = (idx < n_rec) & (torch.rand(len(idx), generator=gen) < 0.5)
        x[use_rec] = recon[idx[use_rec]]
        x = x + torch.randn(x.shape, generator=gen) * torch.rand(len(x), 1, 1, 1, generator=gen) * 0.12
        logits = det(x)
        loss = sum(F.cross_entropy(logits[c], labels[c][idx]) for c in logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return det.eval()


def _min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


class SDTrainee:
    """What the recipe trains for the SD world: the UNet reading the text encoder's last hidden states."""

    def __init__(self, arch: ArchConfig, tokenizer) -> None:
        self.unet = make_unet(arch)
        self.text_encoder = make_text_encoder(arch, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.text_encoder]

    def __call__(self, zt: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.unet(zt, t, self.text_encoder(ids).last_hidden_state).sample


def flow_noised(z0: torch.Tensor, noise: torch.Tensor, gen: torch.Generator, scale: int) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified flow's training input with SD3's logit-normal sigmas: ``x_t = (1 - sigma) z0 + sigma noise`` and
    the timestep the denoiser reads, ``sigma`` on the time ``scale`` (the recipe's: its scheduler's steps)."""
    sigma = torch.sigmoid(torch.randn(len(z0), generator=gen)).view(-1, 1, 1, 1)
    return (1 - sigma) * z0 + sigma * noise, sigma.flatten() * scale


def train_unet(latents: torch.Tensor, scenes: list[domain.Scene], tokenizer, cfg: BuildConfig,
               gen: torch.Generator, rng: np.random.Generator, bar: bool, trainee=None) -> tuple:
    """Train the denoiser and its text encoders jointly on the noise-prediction loss, or the flow-matching one
    where the ``trainee`` says ``objective = "flow"`` (``trainee``: a family's networks and how they condition,
    default the SD world's); returns EMA copies of its modules (SD: UNet and text encoder)."""
    trainee = trainee or SDTrainee(cfg.arch, tokenizer)
    modules = trainee.modules()
    scheduler = make_scheduler()  # its num_train_timesteps is every family's time scale
    flow = getattr(trainee, "objective", "denoising") == "flow"
    params = [p for m in modules for p in m.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, cfg.unet_steps))
    for step in progress_bar(range(cfg.unet_steps), desc="unet+text", unit="step", enabled=bar, leave=True):
        idx = torch.randint(len(latents), (cfg.unet_batch,), generator=gen)
        texts = ["" if rng.random() < cfg.uncond_rate else domain.caption(scenes[i], rng) for i in idx.tolist()]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen)
        if flow:  # rectified flow with SD3's logit-normal sigmas; the velocity target weighs every sigma alike
            pred = trainee(*flow_noised(z0, noise, gen, scheduler.config.num_train_timesteps), ids)
            loss = (pred - (noise - z0)).pow(2).mean()
        else:
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
            zt = scheduler.add_noise(z0, noise, t)
            pred = trainee(zt, t, ids)
            w = _min_snr_weights(scheduler, t, cfg.min_snr_gamma)
            loss = (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    if hasattr(trainee, "distill"):  # a stage of the family's own after this one (Flux: guidance distillation)
        trainee.distill(latents, scenes, cfg, gen, rng, bar)
    return tuple(m.eval() for m in modules)


def detector_accuracy(det: Detector, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    with torch.no_grad():
        logits = {c: torch.cat([det(images[i:i + 512])[c] for i in range(0, len(images), 512)])
                  for c in labels}
    return {c: float((logits[c].argmax(1) == labels[c]).float().mean()) for c in labels}


def _labels(scenes: list[domain.Scene]) -> dict[str, torch.Tensor]:
    rows = [s.labels() for s in scenes]
    return {c: torch.tensor([r[c] for r in rows]) for c in domain.CATEGORY_CLASSES}


def float32_by_default(pipeline_dir: Path) -> None:
    """The weights are stored in float16 to stay small, but plain ``from_pretrained(path)`` must give a pipeline
    that runs: transformers loads a text encoder in the dtype its config names, diffusers the UNet in float32,
    so the config must say float32 (the stored float16 values are upcast exactly)."""
    for path in sorted(pipeline_dir.glob("text_encoder*/config.json")):
        config = json.loads(path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in config:
                config[key] = "float32"
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def world_parts() -> tuple:
    """The shipped world's tokenizer and VAE (float32, frozen): what an oracle and another family's world keep."""
    from transformers import CLIPTokenizer

    from . import world_dir

    world = world_dir() / "pipeline"
    tokenizer = CLIPTokenizer.from_pretrained(world / "tokenizer")
    vae = AutoencoderKL.from_pretrained(world / "vae", torch_dtype=torch.float32).eval().requires_grad_(False)
    return tokenizer, vae


def retrain(scenes: list[domain.Scene], tokenizer, vae, cfg: BuildConfig, rng: np.random.Generator, bar: bool,
            trainee=None) -> tuple:
    """The recipe's denoiser stage alone on ``scenes`` with the shipped world's tokenizer and VAE (an oracle: some
    scenes left out; the SDXL world: another ``trainee``); returns :func:`train_unet`'s modules."""
    latents = encode_latents(vae, to_tensor(render_parallel(scenes, cfg.threads)), bar)
    gen = torch.Generator().manual_seed(cfg.seed)
    return train_unet(latents, scenes, tokenizer, cfg, gen, rng, bar, trainee=trainee)


def save_retrained(pipe, folder: Path, shared: dict[str, str]) -> dict:
    """Write a retrained pipeline as the world ships one (float16 weights whose configs load as float32), with the
    shipped world's files for the ``shared`` components (folder name -> the world's folder it copies, byte for
    byte: a save rewrites configs); returns the pipeline's fingerprint."""
    from ..pipeline import quiet_diffusers
    from . import world_dir

    with quiet_diffusers():  # fp16 casts and a one-shard bar: noise here
        pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
        fp = fingerprint(pipe.to(torch.float32)).to_dict()
    float32_by_default(folder)
    for name, source in shared.items():
        shutil.rmtree(folder / name)
        shutil.copytree(world_dir() / "pipeline" / source, folder / name)
    return fp


def build_family_world(out: Path, family: str, make_trainee: Callable, arch, cfg: BuildConfig | None,
                       log: Callable[[str], None], bar: bool,
                       shares: tuple[str, ...] = ("tokenizer", "tokenizer_2", "vae")) -> dict:
    """Train another family's world into the new folder ``out`` (whole or not at all) by this recipe (``cfg``:
    default the shipped one) on the SD world's training scenes: ``make_trainee(tokenizer)`` gives the family's
    networks (SDXL's, SD3's), trained with the shipped world's tokenizer, VAE and detector; the new pipeline's
    ``shares`` folders are the world's files (``tokenizer`` and ``tokenizer_2``: its tokenizer). Returns its
    world.json."""
    from ..io import atomic_dir
    from . import world_info

    cfg = cfg or BuildConfig()
    start = time.time()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.building"  # the new world appears whole, then replaces the old one
    if staging.exists():
        shutil.rmtree(staging)
    with recipe_torch(cfg), atomic_dir(staging) as tmp:
        rng = np.random.default_rng(cfg.seed)
        tokenizer, vae = world_parts()
        scenes = training_scenes(cfg, rng)
        log(f"{family} world: rendering {len(scenes)} images")
        trainee = make_trainee(tokenizer)
        retrain(scenes, tokenizer, vae, cfg, rng, bar, trainee=trainee)
        sources = {"tokenizer": "tokenizer", "tokenizer_2": "tokenizer", "vae": "vae"}
        fp = save_retrained(trainee.pipeline(vae), tmp / "pipeline", {name: sources[name] for name in shares})
        info = {"family": family, "fingerprint": fp, "concepts": [c.to_dict() for c in domain.concepts()],
                "generation": GENERATION_DEFAULTS, "image_size": domain.IMAGE_SIZE,
                "detector_accuracy": world_info()["detector_accuracy"],
                "build": {**asdict(cfg), family: asdict(arch), "seconds": round(time.time() - start, 1)}}
        (tmp / "world.json").write_text(json.dumps(info, indent=2))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    log(f"{family} world built in {time.time() - start:.0f} s -> {out}")
    return info


@contextmanager
def recipe_torch(cfg: BuildConfig) -> Iterator[None]:
    """Torch's thread count and global seed as the recipe sets them, for its own determinism; the caller's are
    restored afterwards (a build inside a test or a notebook leaves nothing behind)."""
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    try:
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(state)


def build(out: Path, cfg: BuildConfig, log: Callable[[str], None] = print, bar: bool = True) -> dict:
    """Train the whole world into ``out`` (written atomically: a temporary folder renamed at the end)."""
    with recipe_torch(cfg):
        return _build(out, cfg, log, bar)


def _build(out: Path, cfg: BuildConfig, log: Callable[[str], None], bar: bool) -> dict:
    start = time.time()
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".world-", dir=out.parent))
    try:
        stages: dict[str, float] = {}
        clock = time.time()

        def stage(name: str) -> None:  # seconds per stage go to world.json (what to trim when a build is slow)
            nonlocal clock
            stages[name] = round(time.time() - clock, 1)
            clock = time.time()

        tokenizer = build_tokenizer(domain.vocabulary(), tmp / "pipeline" / "tokenizer", cfg.arch.max_length)
        scenes = training_scenes(cfg, rng)
        log(f"rendering {len(scenes)} images")
        images = to_tensor(render_parallel(scenes, cfg.threads))
        stage("render")
        vae, scaling = train_vae(images, cfg, gen, bar)
        latents = encode_latents(vae, images, bar)
        n_rec = min(len(images), 6000)
        with torch.no_grad():
            recon = torch.cat([vae.decode(latents[i:i + 256] / scaling).sample.clamp(-1, 1)
                               for i in range(0, n_rec, 256)])
        stage("vae")
        labels = _labels(scenes)
        det = train_detector(images, labels, recon, cfg, gen, bar)
        held_rng = np.random.default_rng(cfg.seed + 10_000)
        held = [domain.random_scene(held_rng) for _ in range(cfg.n_heldout)]
        accuracy = detector_accuracy(det, to_tensor(domain.render_batch(held)), _labels(held))
        log("detector held-out accuracy: " + ", ".join(f"{c} {a:.4f}" for c, a in accuracy.items()))
        stage("detector")
        unet, text_encoder = train_unet(latents, scenes, tokenizer, cfg, gen, rng, bar)
        stage("unet+text")
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.to(torch.float16).save_pretrained(tmp / "pipeline", safe_serialization=True)
        float32_by_default(tmp / "pipeline")
        det.save(tmp / "detector.safetensors")
        info = {
            "fingerprint": fingerprint(pipe.to(torch.float32)).to_dict(),
            "concepts": [c.to_dict() for c in domain.concepts()],
            "generation": GENERATION_DEFAULTS,
            "image_size": domain.IMAGE_SIZE,
            "detector_accuracy": accuracy,
            "build": {**asdict(cfg), "seconds": round(time.time() - start, 1), "stage_seconds": stages},
        }
        (tmp / "world.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"world built in {time.time() - start:.0f} s -> {out}")
    return info
