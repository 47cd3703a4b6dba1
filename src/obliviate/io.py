"""Atomic writes: an output file (or folder) either appears whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ObliviateError


def check_writable(path: str | Path) -> Path:
    """Fail early, before any long work, when ``path``'s folder cannot take a new file."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ObliviateError(f"output path {path} is a directory")
    if not parent.is_dir():
        raise ObliviateError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ObliviateError(f"cannot write {path}: folder {parent} is not writable")
    try:  # os.access says yes to root everywhere; creating a file is the real test (e.g. /proc refuses)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ObliviateError(f"cannot write {path}: cannot create a file in {parent} ({exc.strerror or exc})") from None
    return path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets ``mode`` (e.g. 0o600 for secrets), by default the usual mode of a new file (0o666 less the
    umask). Writers must write *into* the temporary path, not replace it, or the mode is lost.
    """
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)  # mkstemp makes 0600
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path`` (which must not exist); rename it onto ``path`` only if the
    block succeeds, else remove it: an output folder appears whole or not at all."""
    path = check_writable(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_atomic(path: str | Path, writer: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``writer(tmp)`` and move the result onto ``path`` (with ``mode``, see :func:`atomic_path`)."""
    with atomic_path(path, mode) as tmp:
        writer(tmp)
        if mode is not None:
            os.chmod(tmp, mode)  # in case the writer replaced the file
    return Path(path)
