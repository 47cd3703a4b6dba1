"""Which base model a patch was made for, recognised in any dtype and on any device.

A fingerprint has two parts. ``layout`` hashes what must match exactly: the UNet's and text encoder's configs
(without their dtype entries), every parameter's name and shape. ``probe`` is 64 numbers that summarise the
weights: parameters are spread over 64 buckets by name; each bucket's number is a fixed random +-1
projection of a strided sample of its values, divided by the sample's norm. Rounding the same weights to
float16 or bfloat16 moves a probe number by about 1e-3; another checkpoint moves it by far more (an edit of
a few tensors may not: this tells base models apart, it does not detect edits). So
:meth:`Fingerprint.matches` compares probes with a tolerance, where an exact hash of the values would refuse
a float32 patch on the same model loaded in half precision.

Computing one reads a few thousand values per tensor (fast on SD-sized models). It is cached per pipeline
and recomputed whenever a weight is changed in place or replaced (tensor version counters and data
pointers), so an edit made after the fingerprint was taken can never hide behind a stale one.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

BUCKETS = 64
SAMPLE = 4096  # values read per tensor (a strided sample)
TOLERANCE = 0.02  # largest probe difference still "the same weights" (rounding to bf16 moves it ~1e-3)
_DTYPE_KEYS = {"dtype", "torch_dtype", "transformers_version", "_name_or_path", "_commit_hash"}


@dataclass(frozen=True)
class Fingerprint:
    layout: str                # hex digest of configs, parameter names and shapes
    probe: tuple[float, ...]   # BUCKETS numbers summarising the weights

    @property
    def id(self) -> str:
        """A short name for messages and cache keys: layout and coarsely rounded probe."""
        coarse = ",".join(f"{v:.2f}" for v in self.probe)
        return f"{self.layout[:8]}-{hashlib.sha256(coarse.encode()).hexdigest()[:8]}"

    def matches(self, other: Fingerprint) -> bool:
        if self.layout != other.layout or len(self.probe) != len(other.probe):
            return False
        return max(abs(a - b) for a, b in zip(self.probe, other.probe, strict=True)) <= TOLERANCE

    def to_dict(self) -> dict:
        return {"layout": self.layout, "probe": [round(v, 6) for v in self.probe]}

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprint:
        return cls(str(data["layout"]), tuple(float(v) for v in data["probe"]))


def _modules(pipe) -> list[tuple[str, torch.nn.Module]]:
    from .families import family_of

    family = family_of(pipe)
    names = (family.denoiser, *family.text_encoders, *family.other_encoders)
    return [(name, getattr(pipe, name)) for name in names if getattr(pipe, name, None) is not None]


def _base_state(module, keep_vars: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """The module's own tensors: adapters loaded with peft (``lora_*``) are not part of the base model, and
    the layers they wrap keep their names (``.base_layer`` dropped)."""
    for name, tensor in module.state_dict(keep_vars=keep_vars).items():
        if ".lora_" in name or "lora_magnitude" in name:
            continue
        yield name.replace(".base_layer.", "."), tensor


def _config(module) -> dict:
    config = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
    return {k: v for k, v in config.items() if k not in _DTYPE_KEYS and not k.startswith("_")}


def layout_digest(pipe) -> str:
    """Hash of what must match exactly (cheap: no weight values are read)."""
    h = hashlib.sha256()
    for prefix, module in _modules(pipe):
        h.update(json.dumps(_config(module), sort_keys=True, default=str).encode())
        for name, tensor in _base_state(module):
            h.update(f"{prefix}.{name}:{tuple(tensor.shape)}".encode())
    return h.hexdigest()


def _version(pipe) -> tuple:
    return tuple((t.data_ptr(), t._version) for _, m in _modules(pipe) for _, t in _base_state(m, keep_vars=True))


@torch.no_grad()
def fingerprint(pipe) -> Fingerprint:
    """The fingerprint of the pipeline's weights as they are now (cached until a weight changes)."""
    version = _version(pipe)
    cached = getattr(pipe, "_obliviate_fingerprint", None)
    if cached is not None and cached[0] == version:
        return cached[1]
    proj = np.zeros(BUCKETS)
    norm2 = np.zeros(BUCKETS)
    for prefix, module in _modules(pipe):
        for name, tensor in _base_state(module):
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLE)
            values = flat[::step].double().cpu().numpy()
            key = zlib.crc32(f"{prefix}.{name}".encode())
            signs = np.random.default_rng(key).integers(0, 2, values.size) * 2.0 - 1.0
            proj[key % BUCKETS] += float(signs @ values)
            norm2[key % BUCKETS] += float(values @ values)
    probe = tuple(float(p / np.sqrt(n)) if n > 0 else 0.0 for p, n in zip(proj, norm2, strict=True))
    result = Fingerprint(layout_digest(pipe), probe)
    pipe._obliviate_fingerprint = (version, result)
    return result
