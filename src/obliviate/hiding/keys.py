"""Key files for key-locked hiding: what brings one hidden concept back.

A key is a safetensors file holding either a prompt memory (``form`` "memory": ``keys``/``values`` tensors,
shape m x d_text, appended in attn2 at ``placement``; the paper's design) or LoRA factors on every attn2
projection (``form`` "lora": ``lora_down.unet.*``/``lora_up.unet.*`` for to_q/to_k/to_v/to_out, added to the
weights while the key is installed; obliviate's design), and metadata: the concept it unlocks, its form and
placement, the content hash of the public patch it belongs to and the mark of the public model (the base
model with that patch merged: what a publisher releases, so a key installs there without the patch;
:mod:`.public_model`); a hash over all of it detects any change.
A key may be *sealed* with a passphrase (:mod:`.sealing`). Key files are always written readable by their
owner only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..attention import BLOCK_PLACEMENTS, PromptMemory
from ..errors import ObliviateError
from ..families import attention, denoiser, text_width
from ..files import KEY_FORMAT, safetensors_metadata
from ..io import write_atomic
from ..patch import Patch, patch_updates
from .public_model import PublicMark
from .sealing import is_sealed, seal, unseal

KEY_MODE = 0o600
LORA = "lora"  # the placement of a LoRA key: its factors name their own layers
LORA_KEY_SET = "lora"  # the trainable set a LoRA key (and the key-learning attack in its shape) adapts


@dataclass
class Key:
    concept: str
    tensors: dict[str, torch.Tensor]  # {"keys", "values"} (a prompt memory) or LoRA factors (lora_down/up.unet.*)
    placement: str  # a memory's blocks (mid, mid+up, all), or LORA
    patch_sha256: str  # content hash of the public patch this key belongs to
    public: PublicMark | None = None  # recognises the public model (base + patch merged); None in older keys

    @classmethod
    def of_memory(cls, concept: str, memory: PromptMemory, placement: str, patch_sha256: str = "") -> Key:
        return cls(concept, {"keys": memory.keys, "values": memory.values}, placement, patch_sha256)

    @property
    def form(self) -> str:
        return LORA if self.placement == LORA else "memory"

    @property
    def memory(self) -> PromptMemory:
        if self.form != "memory":
            raise ObliviateError(f"the key for {self.concept!r} is a LoRA, not a prompt memory")
        return PromptMemory(self.tensors["keys"], self.tensors["values"])

    def as_patch(self) -> Patch:
        """A LoRA key as the patch that installs it."""
        return Patch(self.tensors, {"method": "key", "concepts": [self.concept], "lora_scale": 1.0})

    def content_hash(self) -> str:
        h = hashlib.sha256()
        names = ("keys", "values") if self.form == "memory" else sorted(self.tensors)  # memory: format 1's order
        for name in names:
            if self.form != "memory":
                h.update(name.encode())
            h.update(self.tensors[name].detach().contiguous().float().cpu().numpy().tobytes())
        h.update(f"{KEY_FORMAT}|{self.concept}|{self.placement}|{self.patch_sha256}".encode())
        if self.public is not None:  # keys made before the field hash as they did
            h.update(f"|{json.dumps(self.public.to_dict(), sort_keys=True)}".encode())
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        meta = {"format": KEY_FORMAT, "concept": self.concept, "placement": self.placement,
                "patch_sha256": self.patch_sha256, "content_sha256": self.content_hash()}
        if self.public is not None:
            meta["public_model"] = self.public.to_dict()
        return st_save({n: t.detach().float().cpu().contiguous() for n, t in self.tensors.items()},
                       metadata={"obliviate": json.dumps(meta)})

    def save(self, path: str | Path, passphrase: str | None = None) -> Path:
        """Write the key (sealed with ``passphrase`` if given), readable by its owner only."""
        data = self.to_bytes()
        if passphrase is not None:
            data = seal(data, passphrase)
        return write_atomic(path, lambda tmp: tmp.write_bytes(data), mode=KEY_MODE)


def _fail(path: Path, why: str) -> ObliviateError:
    return ObliviateError(f"{path} is not a valid obliviate key file: {why}")


def load_key(path: str | Path, passphrase: str | None = None) -> Key:
    """Read, unseal if needed, and verify a key file; every problem is one :class:`ObliviateError` line."""
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"key file {path} does not exist")
    blob = path.read_bytes()
    if is_sealed(blob):
        blob = unseal(blob, passphrase, str(path))
    try:
        tensors = st_load(blob)
        meta = json.loads(safetensors_metadata(blob).get("obliviate", "null"))
    except Exception:  # noqa: BLE001 - any parse failure means "not a key"
        raise ObliviateError(f"{path} is not an obliviate key file") from None
    if not isinstance(meta, dict) or meta.get("format") != KEY_FORMAT:
        raise ObliviateError(f"{path} is not an obliviate key file")
    for name in ("concept", "placement", "patch_sha256", "content_sha256"):
        if not isinstance(meta.get(name), str) or not meta[name]:
            raise _fail(path, f"no {name!r} field")
    if meta["placement"] not in (*BLOCK_PLACEMENTS, LORA):
        raise _fail(path, f"unknown placement {meta['placement']!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", meta["patch_sha256"]):
        raise _fail(path, "patch_sha256 is not a SHA-256 digest")
    if meta["placement"] == LORA:
        _check_lora(path, tensors)
    else:
        _check_memory(path, tensors)
    public = meta.get("public_model")
    try:
        public = None if public is None else PublicMark.from_dict(public)
    except ObliviateError:
        raise _fail(path, "public_model is not a public-model mark") from None
    key = Key(meta["concept"], {n: t.float() for n, t in tensors.items()}, meta["placement"], meta["patch_sha256"],
              public)
    if key.content_hash() != meta["content_sha256"]:
        raise ObliviateError(f"key {path} has been modified since it was written")
    return key


def _check_memory(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    if set(tensors) != {"keys", "values"}:
        raise _fail(path, f"tensors {sorted(tensors)}, expected keys and values")
    k, v = tensors["keys"], tensors["values"]
    if k.ndim != 2 or k.shape != v.shape or not k.is_floating_point() or not v.is_floating_point() or not len(k):
        raise _fail(path, f"keys {tuple(k.shape)} and values {tuple(v.shape)} must be two float matrices of one "
                          "shape (tokens x width)")


def _check_lora(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    downs = {n.removeprefix("lora_down.") for n in tensors if n.startswith("lora_down.")}
    ups = {n.removeprefix("lora_up.") for n in tensors if n.startswith("lora_up.")}
    if not downs or downs != ups or len(downs) + len(ups) != len(tensors):
        raise _fail(path, "a LoRA key needs matching lora_down.* / lora_up.* tensors and nothing else")
    if any(t.ndim != 2 or not t.is_floating_point() for t in tensors.values()):
        raise _fail(path, "LoRA factors must be float matrices")


def check_key_fits(key: Key, patch_hashes: list[str], source: str) -> None:
    if key.patch_sha256 not in patch_hashes:
        raise ObliviateError(f"key {source} (concept {key.concept!r}) belongs to another public patch")


def check_key_names_model(key: Key, source: str) -> None:
    """A key used without its public patch must name the public model it belongs to."""
    if key.public is None:
        raise ObliviateError(f"key {source} (concept {key.concept!r}) names no public model (it predates that "
                             "field): use it with its public patch (--patch / patch=) on the base model")


def check_key_on_model(key: Key, pipe, source: str) -> None:
    """A key used without its public patch is installed only on the public model it was made for."""
    check_key_names_model(key, source)
    if not key.public.found_in(pipe):
        raise ObliviateError(f"key {source} (concept {key.concept!r}) belongs to another model: load the public "
                             "model it was made for, or give its public patch (--patch / patch=) on the base model")


def check_key_width(key: Key, pipe, source: str = "key") -> None:
    """Refuse a key made for another model's layout (a memory's width; a LoRA's layers and shapes)."""
    if key.form == LORA:
        try:
            patch_updates(pipe, key.as_patch())
        except ObliviateError as exc:
            raise ObliviateError(f"{source} (for {key.concept!r}) does not fit this model: "
                                 f"{str(exc).removeprefix('patch does not fit this model: ')}") from None
        return
    width = text_width(pipe)
    if key.memory.keys.shape[1] != width:
        raise ObliviateError(f"{source} (for {key.concept!r}) is {key.memory.keys.shape[1]} wide; this model's "
                             f"text states are {width} wide")


@contextmanager
def unlocked(pipe, keys: list[Key]) -> Iterator[None]:
    """Install the keys for the ``with`` block (generation then uses them): prompt memories in attn2, LoRA
    keys added to the weights (and taken off afterwards, bit for bit)."""
    memories = [k for k in keys if k.form != LORA]
    if len({k.placement for k in memories}) > 1:
        raise ObliviateError("keys with different placements cannot be used together")
    for k in keys:
        check_key_width(k, pipe)
    with ExitStack() as stack:
        for k in keys:
            if k.form == LORA:
                stack.enter_context(k.as_patch().applied(pipe, force=True))
        if memories:
            model = denoiser(pipe)
            memory = PromptMemory(torch.cat([k.memory.keys for k in memories]).to(model.device, model.dtype),
                                  torch.cat([k.memory.values for k in memories]).to(model.device, model.dtype))
            stack.enter_context(attention(pipe, memory, memories[0].placement))
        yield
