"""Key-locked hiding (Bui et al. 2025; obliviate's protocol in docs/methods.md): a public patch plus one key
per concept.

The public patch is the weight edit only. Each concept's learnable prompt becomes a :class:`Key` bound to the
public patch by its content hash; the prompt tensors never enter the patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..bench import Concept
from ..catalog import Catalog
from ..errors import ObliviateError
from ..files import key_filename
from ..methods.prompt import PromptConfig, train_memory
from ..patch import Patch
from .keys import Key, check_key_fits, check_key_width, load_key, unlocked

__all__ = ["Hidden", "Key", "PromptConfig", "check_key_width", "hide_concepts", "key_filename", "load_key",
           "load_keys", "unlocked"]


@dataclass
class Hidden:
    """The result of hiding: the public patch and one key per concept."""

    patch: Patch
    keys: dict[str, Key]  # concept -> its key

    def save(self, patch_path: str | Path, key_dir: str | Path, passphrase: str | None = None) -> dict[str, Path]:
        """Write the public patch and ``key_dir/<concept>.key.safetensors`` (0600); returns the key paths."""
        key_dir = Path(key_dir)
        if key_dir.exists() and not key_dir.is_dir():
            raise ObliviateError(f"key folder {key_dir} exists and is not a folder")
        key_dir.mkdir(parents=True, exist_ok=True)
        paths = {name: key_dir / key_filename(name) for name in self.keys}
        self.patch.save(patch_path)
        for name, key in self.keys.items():
            key.save(paths[name], passphrase)
        return paths


def hide_concepts(pipe, concepts: list[Concept], cfg: PromptConfig, catalog: Catalog) -> Hidden:
    """Train the learnable prompt with the locking terms; split the result into public patch and keys."""
    if len({c.name for c in concepts}) != len(concepts):
        raise ObliviateError("a concept is given twice")
    result = train_memory(pipe, concepts, cfg, catalog, hiding=True, method="hide")
    return Hidden(result.patch, {n: Key(n, m.keys, m.values, cfg.placement, "") for n, m in result.memories.items()})


def bind_keys(hidden: Hidden) -> Hidden:
    """Bind every key to the public patch's final content hash (after its metadata is complete)."""
    digest = hidden.patch.content_hash()
    for key in hidden.keys.values():
        key.patch_sha256 = digest
    return hidden


def load_keys(keys: list[Key | str | Path], patches: list[Patch], passphrase: str | None = None) -> list[Key]:
    """Keys (objects, or files read and verified) checked to belong to one of ``patches``: a key without its
    public patch, or with another one, is refused."""
    if keys and not patches:
        raise ObliviateError("a key needs the public patch it belongs to (--patch / patch=)")
    hashes = [p.content_hash() for p in patches]
    out = []
    for item in keys:
        key = item if isinstance(item, Key) else load_key(item, passphrase)
        check_key_fits(key, hashes, f"for {key.concept!r}" if isinstance(item, Key) else str(item))
        out.append(key)
    return out
