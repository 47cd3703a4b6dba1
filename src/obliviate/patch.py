"""Patch: one edit of a diffusion model, as a small safetensors file with JSON metadata.

A patch holds weight deltas (``delta.<component>.<parameter>``) and/or LoRA factors
(``lora_down.<component>.<module>`` / ``lora_up.<component>.<module>``) plus metadata: method, concepts,
config, the base model's fingerprint, seconds taken, obliviate version, and a hash of tensors *and* metadata
so that a file changed in any way is refused. Like peft's adapters, applying is reversible:
:meth:`Patch.apply` keeps the original tensors and :meth:`AppliedPatch.remove` puts them back bit for bit;
:meth:`Patch.merge` bakes the edit in. Low-rank patches export to diffusers' LoRA format (peft's key names).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from . import __version__
from .errors import ObliviateError
from .files import PATCH_FORMAT, patch_metadata
from .fingerprint import Fingerprint, fingerprint
from .io import write_atomic

COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


def _canonical(meta: dict) -> str:
    return json.dumps({k: v for k, v in meta.items() if k != "content_sha256"}, sort_keys=True)


@dataclass
class Patch:
    """Tensors keyed ``delta.…`` / ``lora_down.…`` / ``lora_up.…`` and JSON-serialisable metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)
    # Where :meth:`load` read it and the hash it verified: what a report names, so a reader can cite the file.
    file: str | None = field(default=None, repr=False, compare=False)
    file_sha256: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.metadata = json.loads(json.dumps({"format": PATCH_FORMAT, "obliviate_version": __version__,
                                               **self.metadata}))  # tuples -> lists: what a file holds

    @property
    def method(self) -> str:
        return self.metadata.get("method", "?")

    @property
    def concepts(self) -> list[str]:
        return list(self.metadata.get("concepts", []))

    @property
    def base(self) -> Fingerprint | None:
        """The fingerprint of the model the patch was made for (None for a patch made without one)."""
        data = self.metadata.get("base_fingerprint")
        return Fingerprint.from_dict(data) if isinstance(data, dict) else None

    def content_hash(self) -> str:
        """SHA-256 over every tensor (name, dtype, shape, bytes) and the metadata."""
        h = hashlib.sha256()
        for name in sorted(self.tensors):
            t = self.tensors[name].detach().contiguous().cpu()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        h.update(_canonical(self.metadata).encode())
        return h.hexdigest()

    # ---------------------------------------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write atomically (a file appears whole or not at all); the metadata gains the content hash."""
        meta = {**self.metadata, "content_sha256": self.content_hash()}
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        data = safetensors_bytes(tensors, metadata={"obliviate": json.dumps(meta)})
        return write_atomic(path, lambda tmp: tmp.write_bytes(data))

    @classmethod
    def load(cls, path: str | Path) -> Patch:
        """Read and verify a patch file; any problem is a one-line :class:`ObliviateError`."""
        path = Path(path)
        meta = patch_metadata(path)
        try:
            with safe_open(str(path), "pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        except (SafetensorError, OSError, ValueError) as exc:
            raise ObliviateError(f"{path} is not a safetensors patch ({' '.join(str(exc).split())})") from None
        patch = cls(tensors, {k: v for k, v in meta.items() if k != "content_sha256"})
        if patch.content_hash() != meta.get("content_sha256"):
            raise ObliviateError(f"{path} has been modified since it was written (content hash mismatch)")
        patch.file, patch.file_sha256 = str(path), meta["content_sha256"]
        return patch

    # ---------------------------------------------------------------------------------------- on a model

    def apply(self, pipe, force: bool = False) -> AppliedPatch:
        """Add the edit to the pipeline's weights, keeping the originals so :meth:`AppliedPatch.remove`
        restores them exactly. ``force`` skips the base-model check (never the shape check)."""
        return apply_patch(pipe, self, force)

    @contextmanager
    def applied(self, pipe, force: bool = False) -> Iterator[AppliedPatch]:
        """Apply for the ``with`` block; removed afterwards even if the block fails."""
        handle = apply_patch(pipe, self, force)
        try:
            yield handle
        finally:
            handle.remove()

    def merge(self, pipe, force: bool = False) -> None:
        """Bake the edit into the weights for good (no originals kept)."""
        merge_patch(pipe, self, force)

    def to_diffusers_lora(self) -> dict[str, torch.Tensor]:
        return to_diffusers_lora(self)

    def save_diffusers_lora(self, path: str | Path) -> Path:
        return save_diffusers_lora(self, path)


def _split(key: str) -> tuple[str, str, str]:
    parts = key.split(".", 2)
    if len(parts) != 3:
        raise ObliviateError(f"patch entry {key!r} is not <kind>.<component>.<parameter>")
    kind, component, name = parts
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
            param_name, delta = name, tensor.float()
        elif kind == "lora_up":
            down = patch.tensors.get(f"lora_down.{component}.{name}")
            if down is None:
                raise ObliviateError(f"patch has lora_up for {name} but no lora_down")
            param_name, delta = f"{name}.weight", (tensor.float() @ down.float()) * _lora_scale(patch)
        elif kind == "lora_down":
            if f"lora_up.{component}.{name}" not in patch.tensors:
                raise ObliviateError(f"patch has lora_down for {name} but no lora_up")
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


def base_fingerprint(pipe) -> Fingerprint:
    """The fingerprint of the pipeline before any obliviate patch was applied to it."""
    stack = getattr(pipe, "_obliviate_applied", [])
    return stack[0].base_fingerprint if stack else fingerprint(pipe)


def check_family(pipe, metadata: dict, what: str) -> None:
    """Refuse, in one line, a patch or key made for another model family (SDXL on SD, and the reverse)."""
    from .families import family_name, family_of

    want, have = metadata.get("family"), family_of(pipe)
    if want is not None and want != have.key:
        raise ObliviateError(f"{what} was made for a {family_name(want)} model; this is a {have.name} pipeline "
                             f"({type(pipe).__name__})")


def check_fits(pipe, patch: Patch, force: bool = False) -> None:
    """Refuse a patch made for another model family or base model (``force`` skips the fingerprint check, not
    the family or the shapes)."""
    check_family(pipe, patch.metadata, f"patch {patch.file or ''}".rstrip())
    patch_updates(pipe, patch)
    want = patch.base
    if force or want is None:
        return
    have = base_fingerprint(pipe)
    if not want.matches(have):
        from .world import RETIRED_WORLDS

        if want.id in RETIRED_WORLDS:
            raise ObliviateError(f"patch was made for {RETIRED_WORLDS[want.id]}; this model is {have.id}")
        raise ObliviateError(f"patch was made for model {want.id}, this model is {have.id} "
                             "(use --force / force=True to apply anyway)")


@dataclass
class AppliedPatch:
    """What :meth:`remove` needs to undo one application: the pipeline and the original tensors."""

    pipe: object
    patch: Patch
    originals: dict[tuple[str, str], torch.Tensor]
    base_fingerprint: Fingerprint

    def remove(self) -> None:
        remove_patch(self.pipe, self)


@torch.no_grad()
def apply_patch(pipe, patch: Patch, force: bool = False) -> AppliedPatch:
    """Add the patch to the pipeline's weights, keeping the originals so it can be removed exactly."""
    check_fits(pipe, patch, force)
    base = base_fingerprint(pipe)
    originals = {}
    for (component, name), delta in patch_updates(pipe, patch).items():
        param = getattr(pipe, component).get_parameter(name)
        originals[(component, name)] = param.detach().clone()
        param.copy_((param.float() + delta.to(param.device)).to(param.dtype))
    handle = AppliedPatch(pipe, patch, originals, base)
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


@contextmanager
def applied(pipe, patches: list[Patch], force: bool = False) -> Iterator[None]:
    """Apply ``patches`` in order for the ``with`` block; all removed afterwards, whatever happens."""
    handles = []
    try:
        for p in patches:
            handles.append(apply_patch(pipe, p, force))
        yield
    finally:
        for h in reversed(handles):
            h.remove()


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
    data = safetensors_bytes(to_diffusers_lora(patch), metadata={"format": "pt"})
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))
