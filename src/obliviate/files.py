"""Headers of patch and key files (and the base a merged model folder names), read without torch: the CLI
checks every file it is given before it imports torch or loads a model, so a wrong path or a wrong file is
reported in a second, not after a minute."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ObliviateError

PATCH_FORMAT = "obliviate.patch/2"
KEY_FORMAT = "obliviate.key/1"
PRIVATE_NAME, PUBLIC_NAME = "obliviate-signing.key", "obliviate-signing.pub"  # a signing identity's files
SEALED_MAGIC = b"OBLVKEY1"  # a key sealed with a passphrase (AES-256-GCM, see hiding.sealing)
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes (or of at least its header); raises ValueError."""
    if len(blob) < 8:
        raise ValueError("too short for a safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if n > _MAX_HEADER or len(blob) < 8 + n:
        raise ValueError("header length out of range")
    header = json.loads(blob[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not a JSON object")
    return meta


def _read_header(path: Path) -> bytes:
    with path.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return head + f.read(min(n, _MAX_HEADER))


def patch_metadata(path: str | Path) -> dict:
    """The obliviate metadata of a patch file, checked (exists, safetensors, obliviate, this format)."""
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"patch file {path} does not exist")
    try:
        raw = safetensors_metadata(_read_header(path)).get("obliviate")
    except (OSError, ValueError) as exc:
        raise ObliviateError(f"{path} is not a safetensors patch ({' '.join(str(exc).split())})") from None
    if raw is None:
        raise ObliviateError(f"{path} has no obliviate metadata: not an obliviate patch")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ObliviateError(f"{path} has corrupt metadata") from None
    if not isinstance(meta, dict):
        raise ObliviateError(f"{path} has corrupt metadata")
    if meta.get("format") != PATCH_FORMAT:
        raise ObliviateError(f"{path} is patch format {meta.get('format')!r}; this obliviate reads {PATCH_FORMAT} "
                             "(make the patch again with this version)")
    return meta


def check_key_file(path: str | Path, passphrase: str | None) -> None:
    """A key file exists and is a sealed key (with a passphrase given) or an obliviate key; its content is
    verified when it is loaded."""
    path = Path(path)
    if not path.is_file():
        raise ObliviateError(f"key file {path} does not exist")
    try:
        head = _read_header(path)
    except OSError as exc:
        raise ObliviateError(f"cannot read key {path} ({exc.strerror or exc})") from None
    if head.startswith(SEALED_MAGIC):
        if passphrase is None:
            raise ObliviateError(f"key {path} is sealed: give its passphrase (--passphrase-env VAR)")
        return
    try:
        meta = json.loads(safetensors_metadata(head).get("obliviate", "null"))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != KEY_FORMAT:
        raise ObliviateError(f"{path} is not an obliviate key file")


def key_filename(concept: str) -> str:
    """The file name of ``concept``'s key in a key folder."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in concept)
    return f"{safe}.key.safetensors"


DERIVED_FILE = "obliviate.json"  # written by merge into the folder it saves: the model it was derived from


def derived_marker(folder: Path) -> dict | None:
    """The ``obliviate.json`` of a folder obliviate wrote (a merged model, an oracle world); None: no such file."""
    marker = Path(folder) / DERIVED_FILE
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise ObliviateError(f"{marker} is not valid JSON (a folder written by obliviate merge)")
    return data


def derived_from(folder: Path) -> str | None:
    """The base model a merged folder was derived from, as its ``obliviate.json`` names it (None: no such file)."""
    base = (derived_marker(folder) or {}).get("base_model")
    return base if isinstance(base, str) else None


def oracle_without(folder: Path) -> list[str] | None:
    """The concepts an oracle world folder was trained without (None: the folder is no oracle)."""
    oracle = (derived_marker(folder) or {}).get("oracle")
    return list(oracle["without"]) if isinstance(oracle, dict) and isinstance(oracle.get("without"), list) else None


def cache_root() -> Path:
    """obliviate's cache folder: ``$OBLIVIATE_CACHE``, else ``$XDG_CACHE_HOME/obliviate`` (``~/.cache``)."""
    root = os.environ.get("OBLIVIATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "obliviate")
    return Path(root)
