"""Key-locked hiding (Bui et al. 2025, our protocol in METHODS.md §5): a public patch plus one key per concept.

The public patch is the weight edit only. Each concept's learnable prompt becomes a :class:`~obliviate.keys.Key`
bound to the public patch by its content hash; the prompt tensors never enter the patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ObliviateError
from .keys import Key, check_key_fits, load_key
from .methods.prompt import PromptConfig, train
from .patch import Patch
from .pipeline import Model


@dataclass
class Hidden:
    patch: Patch
    keys: dict[str, Key]  # concept -> its key


def hide(model: Model, concepts: list[str], cfg: PromptConfig) -> Hidden:
    """Train the learnable-prompt method with the locking terms; split the result into patch and keys."""
    if len(set(concepts)) != len(concepts):
        raise ObliviateError("a concept is given twice")
    result = train(model, concepts, cfg, hiding=True, method_name="hide")
    patch = result.patch
    patch.metadata["placement"] = cfg.placement
    digest = patch.content_hash()
    keys = {name: Key(name, mem.keys, mem.values, cfg.placement, digest) for name, mem in result.prompts.items()}
    return Hidden(patch, keys)


def key_filename(concept: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in concept)
    return f"{safe}.key.safetensors"


def load_keys(paths: list[str | Path], patches: list[Patch], passphrase: str | None = None) -> list[Key]:
    """Read keys and check each belongs to one of ``patches`` (a key without its patch is refused)."""
    if paths and not patches:
        raise ObliviateError("--key needs the public patch it belongs to (--patch)")
    hashes = [p.content_hash() for p in patches]
    keys = []
    for path in paths:
        key = load_key(path, passphrase)
        check_key_fits(key, hashes, str(path))
        keys.append(key)
    return keys
