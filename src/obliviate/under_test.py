"""The model under test: a pipeline with the patches to apply and the keys to install, resolved and checked once
(files read and verified, each patch checked against the model, each key bound to a patch or to the public
model), so that generation, evaluation and every attack take one object and apply it the same way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ObliviateError
from .hiding import Key, load_keys, unlocked
from .patch import Patch, applied, check_fits
from .pipeline import check_pipeline

PatchLike = Patch | str | Path
KeyLike = Key | str | Path


@dataclass
class ModelUnderTest:
    """``pipe`` with ``patches`` applied (in order) and ``keys`` installed while :meth:`applied` is open;
    ``force`` applies patches made for another base model."""

    pipe: Any
    patches: list[Patch] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    force: bool = False

    @property
    def edited(self) -> bool:
        """Whether anything is applied (else this is the base model)."""
        return bool(self.patches or self.keys)

    @contextmanager
    def applied(self) -> Iterator[Any]:
        """The pipeline with the patches applied and the keys installed; removed afterwards, bit for bit."""
        with applied(self.pipe, self.patches, self.force), unlocked(self.pipe, self.keys):
            yield self.pipe


def _items(value, kinds: tuple[type, ...]) -> list:
    return [] if value is None else [value] if isinstance(value, kinds) else list(value)


def under_test(model, patch: PatchLike | Sequence[PatchLike] | None = None,
               keys: KeyLike | Sequence[KeyLike] | None = None, passphrase: str | None = None,
               force: bool = False) -> ModelUnderTest:
    """``model`` (a pipeline) with ``patch`` (one or several, objects or files) and ``keys`` resolved: each patch
    checked against the model (refused if made for another base model, unless ``force``), each key bound to one
    of the patches or, with none, to the model as the public model it was made for. A :class:`ModelUnderTest`
    passes through as it is."""
    if isinstance(model, ModelUnderTest):
        if patch is not None or keys is not None:
            raise ObliviateError("the model under test already has its patches and keys: give them once")
        return model
    check_pipeline(model)
    patches = [p if isinstance(p, Patch) else Patch.load(p) for p in _items(patch, (Patch, str, Path))]
    for p in patches:
        check_fits(model, p, force)  # before any concept lookup: a foreign patch names foreign concepts
    return ModelUnderTest(model, patches, load_keys(_items(keys, (Key, str, Path)), patches, passphrase, model),
                          force)


def read_files(patches: Sequence[str | Path], keys: Sequence[str | Path], passphrase: str | None = None) \
        -> tuple[list[Patch], list[Key]]:
    """Patch and key files read in full and verified (content hashes; each key bound to one of the patches, or
    naming the public model it belongs to), before a model is loaded: a changed file costs no model load."""
    loaded = [Patch.load(p) for p in patches]
    return loaded, load_keys(list(keys), loaded, passphrase)
