"""Provenance: Ed25519 signatures (``cryptography``) over patch and key files, detached beside each file.

A signature covers the file's bytes, so tensors, metadata and the content hash are all covered: a user who holds
the publisher's public key can tell that a patch or key is the one the publisher wrote, byte for byte. A key's
own binding to its public patch (its ``patch_sha256``) then extends the guarantee from the patch to the key.
Signatures sit in ``<file>.sig`` (JSON); private keys are written readable by their owner only. Torch-free.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ObliviateError
from .files import PRIVATE_NAME, PUBLIC_NAME
from .io import write_atomic

SIGNATURE_FORMAT = "obliviate.signature/1"


def signature_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sig")


def _file_digest(path: Path) -> str:
    if not path.is_file():
        raise ObliviateError(f"{path}: no such file")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _message(digest: str) -> bytes:
    return f"{SIGNATURE_FORMAT}\n{digest}".encode()


def public_key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key (first 16 hex digits of the SHA-256 of its raw bytes)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_identity(folder: str | Path) -> tuple[Path, Path]:
    """Make a signing identity in ``folder``: the private key (PEM, mode 0600) and the public key to hand out."""
    folder = Path(folder)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if private_path.exists():
        raise ObliviateError(f"{private_path} exists: refusing to replace a signing identity")
    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_atomic(private_path, lambda tmp: tmp.write_bytes(pem), mode=0o600)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(public_path, lambda tmp: tmp.write_bytes(public_pem))
    return private_path, public_path


def _load_pem(path: str | Path, what: str, form: str, load, kind: type):
    """A PEM key of ``kind`` from ``path``; every failure is one line naming the file."""
    try:
        key = load(Path(path).read_bytes())
    except FileNotFoundError:
        raise ObliviateError(f"{what} {path}: no such file") from None
    except (ValueError, TypeError) as exc:
        raise ObliviateError(f"{what} {path} is not {form} ({exc})") from None
    if not isinstance(key, kind):
        raise ObliviateError(f"{what} {path} is not an Ed25519 key")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    return _load_pem(path, "private key", "an unencrypted PEM private key",
                     lambda data: serialization.load_pem_private_key(data, password=None), Ed25519PrivateKey)


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    return _load_pem(path, "public key", "a PEM public key", serialization.load_pem_public_key, Ed25519PublicKey)


def sign_file(path: str | Path, private_key: str | Path | Ed25519PrivateKey) -> Path:
    """Write ``<path>.sig``: the publisher's Ed25519 signature over the file's SHA-256."""
    path = Path(path)
    private = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    digest = _file_digest(path)
    record = {"format": SIGNATURE_FORMAT, "file_sha256": digest, "public_key": public_key_id(private.public_key()),
              "signature": base64.b64encode(private.sign(_message(digest))).decode()}
    out = signature_path(path)
    return write_atomic(out, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))


def verify_file(path: str | Path, public_key: str | Path | Ed25519PublicKey) -> str:
    """Check ``<path>.sig`` against the file and ``public_key``; returns the key's fingerprint, raises an
    :class:`ObliviateError` saying what is wrong otherwise."""
    path = Path(path)
    public = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    sig_path = signature_path(path)
    if not sig_path.is_file():
        raise ObliviateError(f"{path} is not signed (no {sig_path.name} beside it)")
    try:
        record = json.loads(sig_path.read_text())
        signature = base64.b64decode(record["signature"], validate=True)
        if record["format"] != SIGNATURE_FORMAT:
            raise ValueError(f"format {record['format']!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ObliviateError(f"{sig_path} is not an obliviate signature ({exc})") from None
    digest = _file_digest(path)
    try:
        public.verify(signature, _message(digest))
    except InvalidSignature:
        who = public_key_id(public)
        if record.get("public_key") != who:
            raise ObliviateError(f"{path} is signed by key {record.get('public_key')}, not by {who}") from None
        raise ObliviateError(f"{path} does not match its signature: the file was changed after signing") from None
    return public_key_id(public)
