"""Patch: one edit of a diffusion model, as a small safetensors file with JSON metadata.

A patch holds weight deltas (``delta.<component>.<parameter>``) and/or LoRA factors
(``lora_down.<component>.<module>`` / ``lora_up.<component>.<module>``) plus metadata: method, concepts,
config, the base model's fingerprint, seconds taken, obliviate version, and a hash of the tensors so a
tampered file is refused. Like peft's adapters, applying is reversible: :func:`apply_patch` keeps the
original tensors and :func:`remove_patch` puts them back bit for bit; :func:`merge_patch` bakes it in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .errors import ObliviateError
from .io import write_atomic

FORMAT = "obliviate.patch/1"
COMPONENTS = ("unet", "text_encoder")


@dataclass
class Patch:
    """Tensors keyed ``delta.…`` / ``lora_down.…`` / ``lora_up.…`` and metadata (JSON-serialisable)."""

    tensors: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.metadata.get("method", "?")

    @property
    def concepts(self) -> list[str]:
        return list(self.metadata.get("concepts", []))

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.tensors):
            t = self.tensors[name].detach().contiguous().cpu()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write atomically; the metadata gains the format tag, version and content hash."""
        meta = {**self.metadata, "format": FORMAT, "obliviate_version": __version__,
                "content_sha256": self.content_hash()}
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"obliviate": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | Path) -> Patch:
        """Read and verify a patch file; any problem is a one-line :class:`ObliviateError`."""
        path = Path(path)
        if not path.is_file():
            raise ObliviateError(f"patch file {path} does not exist")
        try:
            with safe_open(str(path), "pt") as f:
                raw = (f.metadata() or {}).get("obliviate")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        except (SafetensorError, OSError, ValueError) as exc:
            raise ObliviateError(f"{path} is not a safetensors patch ({exc})") from None
        if raw is None:
            raise ObliviateError(f"{path} has no obliviate metadata: not an obliviate patch")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError:
            raise ObliviateError(f"{path} has corrupt metadata") from None
        if meta.get("format") != FORMAT:
            raise ObliviateError(f"{path} is patch format {meta.get('format')!r}; this obliviate reads {FORMAT}")
        patch = cls(tensors, meta)
        if patch.content_hash() != meta.get("content_sha256"):
            raise ObliviateError(f"{path} has been modified since it was written (content hash mismatch)")
        return patch


def _split(key: str) -> tuple[str, str, str]:
    kind, component, name = key.split(".", 2)
    if component not in COMPONENTS:
        raise ObliviateError(f"patch entry {key!r} names unknown component {component!r}")
    return kind, component, name


def _lora_scale(patch: Patch) -> float:
    return float(patch.metadata.get("lora_scale", 1.0))


def patch_updates(pipe, patch: Patch) -> dict[tuple[str, str], torch.Tensor]:
    """The weight change per (component, parameter name), checked against the model's shapes."""
    updates: dict[tuple[str, str], torch.Tensor] = {}
    for key, tensor in patch.tensors.items():
        kind, component, name = _split(key)
        if kind == "delta":
            param_name, delta = name, tensor
        elif kind == "lora_up":
            down = patch.tensors.get(f"lora_down.{component}.{name}")
            if down is None:
                raise ObliviateError(f"patch has lora_up for {name} but no lora_down")
            param_name, delta = f"{name}.weight", (tensor.float() @ down.float()) * _lora_scale(patch)
        elif kind == "lora_down":
            continue
        else:
            raise ObliviateError(f"patch entry {key!r} has unknown kind {kind!r}")
        module = getattr(pipe, component)
        try:
            param = module.get_parameter(param_name)
        except AttributeError:
            raise ObliviateError(f"patch does not fit this model: it has no parameter {component}.{param_name}") \
                from None
        if tuple(param.shape) != tuple(delta.shape):
            raise ObliviateError(f"patch does not fit this model: {component}.{param_name} is "
                                 f"{tuple(param.shape)}, patch has {tuple(delta.shape)}")
        updates[(component, param_name)] = updates.get((component, param_name), 0) + delta
    return updates


def _base_fingerprint(pipe) -> str:
    from .pipeline import fingerprint

    stack = getattr(pipe, "_obliviate_applied", [])
    return stack[0].base_fingerprint if stack else fingerprint(pipe)


def check_fits(pipe, patch: Patch, force: bool = False) -> None:
    """Refuse a patch made for another base model (``force`` skips the fingerprint check, not shapes)."""
    patch_updates(pipe, patch)
    want = patch.metadata.get("base_fingerprint")
    if not force and want is not None and want != _base_fingerprint(pipe):
        raise ObliviateError(f"patch was made for model {want}, this model is {_base_fingerprint(pipe)} "
                             "(use --force to apply anyway)")


@dataclass
class AppliedPatch:
    """What :func:`remove_patch` needs to undo one application: the original tensors."""

    patch: Patch
    originals: dict[tuple[str, str], torch.Tensor]
    base_fingerprint: str


@torch.no_grad()
def apply_patch(pipe, patch: Patch, force: bool = False) -> AppliedPatch:
    """Add the patch to the pipeline's weights, keeping the originals so it can be removed exactly."""
    check_fits(pipe, patch, force)
    base = _base_fingerprint(pipe)
    originals = {}
    for (component, name), delta in patch_updates(pipe, patch).items():
        param = getattr(pipe, component).get_parameter(name)
        originals[(component, name)] = param.detach().clone()
        param.add_(delta.to(device=param.device, dtype=param.dtype))
    handle = AppliedPatch(patch, originals, base)
    if not hasattr(pipe, "_obliviate_applied"):
        pipe._obliviate_applied = []
    pipe._obliviate_applied.append(handle)
    return handle


@torch.no_grad()
def remove_patch(pipe, handle: AppliedPatch | None = None) -> None:
    """Undo the last applied patch (or ``handle``, which must be the last): weights bit-identical to before."""
    stack = getattr(pipe, "_obliviate_applied", [])
    if not stack:
        raise ObliviateError("no patch is applied to this pipeline")
    if handle is not None and stack[-1] is not handle:
        raise ObliviateError("patches must be removed in reverse order of application")
    handle = stack.pop()
    for (component, name), original in handle.originals.items():
        getattr(pipe, component).get_parameter(name).copy_(original)


def merge_patch(pipe, patch: Patch, force: bool = False) -> None:
    """Bake the patch into the weights for good (no originals kept)."""
    handle = apply_patch(pipe, patch, force)
    pipe._obliviate_applied.remove(handle)


def patch_from_weights(pipe, before: dict[tuple[str, str], torch.Tensor], metadata: dict) -> Patch:
    """A delta patch from parameters that changed since ``before`` (the originals of the trained set)."""
    tensors = {}
    for (component, name), original in before.items():
        now = getattr(pipe, component).get_parameter(name).detach()
        delta = (now.float() - original.float()).cpu()
        if torch.count_nonzero(delta):
            tensors[f"delta.{component}.{name}"] = delta
    return Patch(tensors, metadata)


def to_diffusers_lora(patch: Patch) -> dict[str, torch.Tensor]:
    """LoRA factors in the peft key format that ``pipe.load_lora_weights(state_dict)`` reads.

    The patch's scale is folded into the up factor, since diffusers uses alpha = rank (scale 1) when the
    file carries no alphas.
    """
    out = {}
    scale = _lora_scale(patch)
    for key, tensor in patch.tensors.items():
        kind, component, name = _split(key)
        if kind == "delta":
            raise ObliviateError("only low-rank (LoRA) patches export to diffusers' LoRA format; "
                                 "this patch has full-weight deltas")
        if kind == "lora_down":
            out[f"{component}.{name}.lora_A.weight"] = tensor.float().contiguous()
        elif kind == "lora_up":
            out[f"{component}.{name}.lora_B.weight"] = (tensor.float() * scale).contiguous()
    return out


def save_diffusers_lora(patch: Patch, path: str | Path) -> Path:
    """Write ``to_diffusers_lora(patch)`` as a safetensors file loadable by ``pipe.load_lora_weights``."""
    tensors = to_diffusers_lora(patch)
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
