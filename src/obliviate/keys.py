"""Key files for key-locked hiding: the learnable prompt that brings one hidden concept back.

A key is a safetensors file holding the prompt memory (``keys``/``values`` tensors, shape m x d_text) and
metadata: the concept it unlocks, the placement of the memory, and the content hash of the public patch it
belongs to. A key may be *sealed* with a passphrase: the whole file is then encrypted with AES-256-GCM
(authenticated: a changed byte is detected) under a key derived by scrypt, both from ``cryptography``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import ObliviateError
from .io import write_atomic

KEY_FORMAT = "obliviate.key/1"
SEALED_MAGIC = b"OBLVKEY1"


@dataclass
class Key:
    concept: str
    keys: torch.Tensor
    values: torch.Tensor
    placement: str
    patch_sha256: str  # content hash of the public patch this key belongs to

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for t in (self.keys, self.values):
            h.update(t.detach().contiguous().float().numpy().tobytes())
        h.update(f"{self.concept}|{self.placement}|{self.patch_sha256}".encode())
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        meta = {"format": KEY_FORMAT, "concept": self.concept, "placement": self.placement,
                "patch_sha256": self.patch_sha256, "content_sha256": self.content_hash()}
        return st_save({"keys": self.keys.detach().float().contiguous(),
                        "values": self.values.detach().float().contiguous()}, metadata={"obliviate": json.dumps(meta)})

    def save(self, path: str | Path, passphrase: str | None = None) -> Path:
        data = self.to_bytes()
        if passphrase is not None:
            data = seal(data, passphrase)
        return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _derive(passphrase: str, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())


def seal(data: bytes, passphrase: str) -> bytes:
    """Encrypt ``data`` with AES-256-GCM under a scrypt-derived key; the header is authenticated too."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not passphrase:
        raise ObliviateError("empty passphrase")
    salt, nonce = os.urandom(16), os.urandom(12)
    return SEALED_MAGIC + salt + nonce + AESGCM(_derive(passphrase, salt)).encrypt(nonce, data, SEALED_MAGIC)


def unseal(blob: bytes, passphrase: str | None, source: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if passphrase is None:
        raise ObliviateError(f"key {source} is sealed: give its passphrase (--passphrase-env VAR)")
    salt, nonce, body = blob[8:24], blob[24:36], blob[36:]
    try:
        return AESGCM(_derive(passphrase, salt)).decrypt(nonce, body, SEALED_MAGIC)
    except InvalidTag:
        raise ObliviateError(f"key {source}: wrong passphrase or the file was modified") from None


def load_key(path: str | Path, passphrase: str | None = None) -> Key:
    """Read, unseal if needed, and verify a key file; every problem is one :class:`ObliviateError` line."""
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"key file {path} does not exist")
    blob = path.read_bytes()
    if blob.startswith(SEALED_MAGIC):
        blob = unseal(blob, passphrase, str(path))
    try:
        tensors = st_load(blob)
        meta = json.loads(_metadata(blob)["obliviate"])
    except Exception:  # noqa: BLE001 - any parse failure means "not a key"
        raise ObliviateError(f"{path} is not an obliviate key file") from None
    if meta.get("format") != KEY_FORMAT or set(tensors) != {"keys", "values"}:
        raise ObliviateError(f"{path} is not an obliviate key file")
    key = Key(meta["concept"], tensors["keys"], tensors["values"], meta["placement"], meta["patch_sha256"])
    if key.content_hash() != meta.get("content_sha256"):
        raise ObliviateError(f"key {path} has been modified since it was written")
    return key


def _metadata(blob: bytes) -> dict:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]).get("__metadata__", {})


def check_key_fits(key: Key, patch_hashes: list[str], source: str) -> None:
    if key.patch_sha256 not in patch_hashes:
        raise ObliviateError(f"key {source} (for {key.concept!r}) belongs to another public patch")


@contextmanager
def unlocked(model, keys: list[Key]) -> Iterator[None]:
    """Install the keys' prompt memory in attn2 for the ``with`` block."""
    from .attention import Attn2Processor, PromptMemory, attn2_processors

    if not keys:
        yield
        return
    if len({k.placement for k in keys}) != 1:
        raise ObliviateError("keys with different placements cannot be used together")
    memory = PromptMemory(torch.cat([k.keys for k in keys]), torch.cat([k.values for k in keys]))
    with attn2_processors(model.pipe.unet, Attn2Processor(memory=memory), keys[0].placement):
        yield
