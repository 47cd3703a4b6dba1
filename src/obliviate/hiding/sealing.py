"""Sealing a key file with a passphrase: AES-256-GCM under a key derived by scrypt (``cryptography``).

GCM is authenticated: a changed byte, or the wrong passphrase, is detected, never decrypted to garbage.
The magic header is authenticated too, as associated data.
"""

from __future__ import annotations

import os

from ..errors import ObliviateError
from ..files import SEALED_MAGIC

_SALT, _NONCE = 16, 12


def _derive(passphrase: str, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(SEALED_MAGIC)


def seal(data: bytes, passphrase: str) -> bytes:
    """Encrypt ``data`` under ``passphrase``: magic | salt | nonce | ciphertext+tag."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not passphrase:
        raise ObliviateError("empty passphrase")
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    return SEALED_MAGIC + salt + nonce + AESGCM(_derive(passphrase, salt)).encrypt(nonce, data, SEALED_MAGIC)


def unseal(blob: bytes, passphrase: str | None, source: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if passphrase is None:
        raise ObliviateError(f"key {source} is sealed: give its passphrase (--passphrase-env VAR)")
    head = len(SEALED_MAGIC)
    salt, nonce, body = blob[head:head + _SALT], blob[head + _SALT:head + _SALT + _NONCE], blob[head + _SALT + _NONCE:]
    if len(body) < 16:
        raise ObliviateError(f"key {source} is truncated")
    try:
        return AESGCM(_derive(passphrase, salt)).decrypt(nonce, body, SEALED_MAGIC)
    except InvalidTag:
        raise ObliviateError(f"key {source}: wrong passphrase or the file was modified") from None
