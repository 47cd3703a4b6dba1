"""Key files for key-locked hiding: the prompt memory that brings one hidden concept back.

A key is a safetensors file holding the prompt memory (``keys``/``values`` tensors, shape m x d_text) and
metadata: the concept it unlocks, the placement of the memory, and the content hash of the public patch it
belongs to; a hash over all of it detects any change. A key may be *sealed* with a passphrase
(:mod:`.sealing`). Key files are always written readable by their owner only (mode 0600).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..attention import BLOCK_PLACEMENTS, PromptMemory, attn2_processors
from ..errors import ObliviateError
from ..files import KEY_FORMAT, safetensors_metadata
from ..io import write_atomic
from .sealing import is_sealed, seal, unseal

KEY_MODE = 0o600


@dataclass
class Key:
    concept: str
    keys: torch.Tensor
    values: torch.Tensor
    placement: str
    patch_sha256: str  # content hash of the public patch this key belongs to

    @property
    def memory(self) -> PromptMemory:
        return PromptMemory(self.keys, self.values)

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for t in (self.keys, self.values):
            h.update(t.detach().contiguous().float().cpu().numpy().tobytes())
        h.update(f"{KEY_FORMAT}|{self.concept}|{self.placement}|{self.patch_sha256}".encode())
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        meta = {"format": KEY_FORMAT, "concept": self.concept, "placement": self.placement,
                "patch_sha256": self.patch_sha256, "content_sha256": self.content_hash()}
        return st_save({"keys": self.keys.detach().float().cpu().contiguous(),
                        "values": self.values.detach().float().cpu().contiguous()},
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
    if meta["placement"] not in BLOCK_PLACEMENTS:
        raise _fail(path, f"unknown placement {meta['placement']!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", meta["patch_sha256"]):
        raise _fail(path, "patch_sha256 is not a SHA-256 digest")
    if set(tensors) != {"keys", "values"}:
        raise _fail(path, f"tensors {sorted(tensors)}, expected keys and values")
    k, v = tensors["keys"], tensors["values"]
    if k.ndim != 2 or k.shape != v.shape or not k.is_floating_point() or not v.is_floating_point() or not len(k):
        raise _fail(path, f"keys {tuple(k.shape)} and values {tuple(v.shape)} must be two float matrices of one "
                          "shape (tokens x width)")
    key = Key(meta["concept"], k.float(), v.float(), meta["placement"], meta["patch_sha256"])
    if key.content_hash() != meta["content_sha256"]:
        raise ObliviateError(f"key {path} has been modified since it was written")
    return key


def check_key_fits(key: Key, patch_hashes: list[str], source: str) -> None:
    if key.patch_sha256 not in patch_hashes:
        raise ObliviateError(f"key {source} (concept {key.concept!r}) belongs to another public patch")


def check_key_width(key: Key, pipe, source: str = "key") -> None:
    width = pipe.text_encoder.config.hidden_size
    if key.keys.shape[1] != width:
        raise ObliviateError(f"{source} (for {key.concept!r}) is {key.keys.shape[1]} wide; this model's text "
                             f"encoder is {width} wide")


@contextmanager
def unlocked(pipe, keys: list[Key]) -> Iterator[None]:
    """Install the keys' prompt memory in attn2 for the ``with`` block (generation then uses it)."""
    if not keys:
        yield
        return
    if len({k.placement for k in keys}) != 1:
        raise ObliviateError("keys with different placements cannot be used together")
    for k in keys:
        check_key_width(k, pipe)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    memory = PromptMemory(torch.cat([k.keys for k in keys]).to(device, dtype),
                          torch.cat([k.values for k in keys]).to(device, dtype))
    with attn2_processors(pipe.unet, memory, keys[0].placement):
        yield
