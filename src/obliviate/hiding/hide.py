"""Hiding: the two designs' public patch and keys, and binding keys to the patch and to the public model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..bench import Concept
from ..catalog import Catalog
from ..errors import ObliviateError
from ..files import key_filename
from ..options import to_dict
from ..patch import Patch
from ..terms import keep_bank
from .config import HideConfig, PaperHideConfig
from .keys import LORA, Key, check_key_fits, check_key_names_model, check_key_on_model, load_key
from .public_model import PublicMark


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


def hide_concepts(pipe, concepts: list[Concept], cfg: HideConfig | PaperHideConfig, catalog: Catalog) -> Hidden:
    """Hide ``concepts``: the ``lethe`` design for a :class:`HideConfig`, the paper's for a
    :class:`PaperHideConfig`."""
    from ..methods import lethe
    from ..methods.adversaries import weight_adversary_term
    from .key_training import concept_latents, key_bank, train_key
    from .paper import hide_paper

    if len({c.name for c in concepts}) != len(concepts):
        raise ObliviateError("a concept is given twice")
    if isinstance(cfg, PaperHideConfig):  # the learnable prompt with the locking terms, split into patch and keys
        return Hidden(*hide_paper(pipe, concepts, cfg, catalog))
    erasure = replace(cfg.erasure, steps=cfg.erasure.steps * len(concepts))  # each concept gets one Lethe budget
    extra = weight_adversary_term(cfg.weight_adversary) if cfg.weight_adversary is not None else None
    public = lethe.fit(pipe, concepts, erasure, catalog, extra=extra)
    public.metadata.update(method="hide", design="lethe", config=to_dict(cfg))
    latents = concept_latents(pipe, catalog, concepts, cfg.erasure.n_images, cfg.seed)
    keep = keep_bank(pipe, catalog, concepts, None, cfg.seed)
    keys = {}
    for c in concepts:
        bank = key_bank(pipe, keep, latents, concepts, c.name)
        factors = train_key(pipe, public, c, latents[c.name], bank, catalog.bench.neutral, cfg.keys)
        keys[c.name] = Key(c.name, factors, LORA, "")
    return Hidden(public, keys)


def bind_keys(hidden: Hidden, pipe) -> Hidden:
    """Bind every key to the public patch's final content hash (after its metadata is complete) and to the
    public model (``pipe``, the base model, with the patch merged) by the patch's mark, so that a key installs on
    the released public model without the patch."""
    digest = hidden.patch.content_hash()
    public = PublicMark.of(pipe, hidden.patch)
    for key in hidden.keys.values():
        key.patch_sha256, key.public = digest, public
    return hidden


def load_keys(keys: list[Key | str | Path], patches: list[Patch], passphrase: str | None = None,
              pipe=None) -> list[Key]:
    """Keys (objects, or files read and verified) checked to belong to one of ``patches``, or, with no patch, to
    ``pipe`` as the public model they were made for (without ``pipe``: only that they name one)."""
    hashes = [p.content_hash() for p in patches]
    out = []
    for item in keys:
        key = item if isinstance(item, Key) else load_key(item, passphrase)
        source = f"for {key.concept!r}" if isinstance(item, Key) else str(item)
        if patches:
            check_key_fits(key, hashes, source)
        elif pipe is None:
            check_key_names_model(key, source)
        else:
            check_key_on_model(key, pipe, source)
        out.append(key)
    return out
