"""Load a Stable Diffusion pipeline by name, folder or hub id, on a device and in a dtype; check a user's own.

obliviate works on plain diffusers pipelines: nothing here wraps them. ``world`` is the pipeline shipped with
obliviate. Every check that can fail (device, dtype, pipeline class) runs before any weight is read.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import ObliviateError
from .files import DERIVED_FILE, derived_from

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICE_KINDS = ("cpu", "cuda", "mps")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``float32`` (default), ``float16`` or ``bfloat16`` (also fp32/fp16/bf16, or a torch.dtype)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ObliviateError(f"unsupported dtype {dtype} (choose float32, float16 or bfloat16)")
        return dtype
    if dtype not in DTYPES:
        raise ObliviateError(f"unknown dtype {dtype!r} (choose float32, float16 or bfloat16)")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``cpu`` (default), ``cuda[:N]`` or ``mps``; refused at once when this machine has no such device."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        from .preflight import check_device

        check_device(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ObliviateError(f"unknown device {device!r} (choose cpu, cuda, cuda:N or mps)") from None
    if dev.type not in DEVICE_KINDS:
        raise ObliviateError(f"unsupported device {device!r} (choose cpu, cuda, cuda:N or mps)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ObliviateError(f"device {device!r} is not available: this machine has no CUDA GPU "
                                 "(or this torch build has no CUDA support)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ObliviateError(f"device {device!r} is not available: {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ObliviateError(f"device {device!r} is not available on this machine")
    return dev


def _source(model: str) -> Path | str:
    """What from_pretrained reads for 'world', a folder or a hub id (checked by :func:`preflight.check_model`)."""
    from .preflight import check_model

    check_model(model)
    from .world import WORLDS, world_dir

    if model in WORLDS:
        return world_dir(model) / "pipeline"
    path = Path(model).expanduser()
    return path if path.exists() else model


def check_pipeline(pipe) -> None:
    """Refuse, in one line that names the supported families, a pipeline obliviate cannot edit."""
    from .families import family_of

    family_of(pipe)


def _pipeline_class(model: str, source: Path | str):
    """The diffusers class ``source`` names in its model_index.json, refused (before any weight is read) when no
    family serves it."""
    import diffusers

    from .families import PIPELINE_CLASSES, supported

    try:
        name = diffusers.DiffusionPipeline.load_config(source).get("_class_name")
    except (OSError, ValueError) as exc:
        raise ObliviateError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
    if name not in PIPELINE_CLASSES:
        raise ObliviateError(f"{model} is a {name}; obliviate supports {supported()}")
    return getattr(diffusers, name)


def load_pipeline(model: str = "world", device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None):
    """A plain diffusers pipeline of a supported family (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``,
    ``StableDiffusion3Pipeline``, ``FluxPipeline``): a shipped world (``world``, ``world-sdxl``, ...), a diffusers
    folder or a hub id.

    All components share ``dtype`` (default float32) and sit on ``device`` (default cpu); weights are frozen
    (``requires_grad`` off, eval mode) and diffusers' progress bars are off. The fingerprint that patches are
    checked against is taken here, before anything can edit the weights.
    """
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    source = _source(model)
    from diffusers.utils import logging as diffusers_logging

    cls = _pipeline_class(model, source)
    extra = {"safety_checker": None, "requires_safety_checker": False} \
        if "safety_checker" in cls._optional_components else {}
    try:
        with _no_progress_bars(), warnings.catch_warnings():  # newer diffusers renamed torch_dtype; older ones
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)  # only know it
            pipe = cls.from_pretrained(source, torch_dtype=dt, **extra)
    except (OSError, ValueError) as exc:
        raise ObliviateError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
    check_pipeline(pipe)
    _fit_world_size(pipe, model)
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # diffusers warns that half precision cannot run on a CPU; it can
    try:
        pipe = pipe.to(dev)
    finally:
        diffusers_logging.set_verbosity(level)
    pipe.set_progress_bar_config(disable=True)
    pipe._obliviate_derived_from = derived_from(source) if isinstance(source, Path) else None
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    from .fingerprint import fingerprint

    fingerprint(pipe)
    return pipe


def _fit_world_size(pipe, model: str) -> None:
    """A world's pipeline samples at the world's image size by default: Flux's pipeline fixes its default size
    in code (1024 px), not in its folder, so a world's is set here from its world.json."""
    from .preflight import world_of
    from .world import world_info

    world = world_of(model)
    if world is not None and hasattr(pipe, "default_sample_size"):
        pipe.default_sample_size = world_info(world)["image_size"] // pipe.vae_scale_factor


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers' warnings and progress bars off for a save (then back as they were)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with _no_progress_bars():
            yield
    finally:
        diffusers_logging.set_verbosity(level)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """diffusers' and transformers' progress bars off for a quick load or save (they are noise there), then
    back as they were."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    bars = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in bars:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, was_on in bars:
            if was_on:
                lib.enable_progress_bar()


def save_merged(pipe, patches: list, out: str | Path, force: bool = False) -> Path:
    """Bake ``patches`` into ``pipe``'s weights for good and write it to the new folder ``out`` (a diffusers
    folder, whole or not at all): what a publisher releases. The folder names the model it was derived from, so
    a merged world model is still evaluated against the world's bench and detector."""
    from .io import atomic_dir
    from .preflight import world_of

    out = Path(out)
    if out.exists():
        raise ObliviateError(f"{out} exists: give a new folder")
    base = world_of(pipe) or model_name(pipe)
    marker = {"base_model": base, "patches": [{"method": p.method, "concepts": p.concepts,
                                               "content_hash": p.content_hash()} for p in patches]}
    with atomic_dir(out) as tmp:  # checked writable before the weights change
        for patch in patches:  # each is checked against the model as it merges; nothing is written before all have
            patch.merge(pipe, force=force)
        with _no_progress_bars():  # a one-shard bar is noise
            pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / DERIVED_FILE).write_text(json.dumps(marker, indent=1) + "\n")
    pipe._obliviate_derived_from = base
    return out


def model_name(pipe) -> str:
    """A shipped world's name ('world', 'world-sdxl', ...), else the folder or hub id the pipeline was loaded
    from."""
    from .preflight import world_of

    world = world_of(pipe)
    if world is not None and getattr(pipe, "_obliviate_derived_from", None) is None:
        return world
    return str(getattr(pipe.config, "_name_or_path", None) or type(pipe).__name__)
