"""Pre-flight: every check that needs no model (model names, output paths, bench and concept names, patch and
key file headers, numbers), torch-free, so that a mistake is one line within a second. The API functions run
the same checks on what they are given; the command line runs them before it imports torch or loads a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ObliviateError
from .files import check_key_file, derived_from, oracle_without, patch_metadata
from .io import check_writable

WORLD = "world"


# ---------------------------------------------------------------------------------------------------- models


def check_model(model: str) -> str:
    """A ``--model``: 'world', a diffusers folder of a supported pipeline, or a hub id ('org/name')."""
    from .families import PIPELINE_CLASSES, supported
    from .world import WORLDS

    if model in WORLDS:
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ObliviateError(f"{model} is not a diffusers pipeline folder (no model_index.json)")
        cls = _class_name(path)
        if cls not in PIPELINE_CLASSES:
            raise ObliviateError(f"{model} is a {cls}; obliviate supports {supported()}")
        derived_from(path)  # a broken obliviate.json is refused here, not after the model loads
        return model
    parts = model.split("/")
    hub_id = len(parts) == 2 and all(parts) and not path.exists()
    if model.startswith((".", "/", "~")) or (os.sep in model and not hub_id):
        raise ObliviateError(f"--model {model}: no such folder")
    if not hub_id or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ObliviateError(f"unknown model {model!r}: use a shipped world ({', '.join(WORLDS)}), a diffusers "
                             "folder, or a hub id (online)")
    return model


def model_help() -> str:
    """``--model``'s help: the shipped worlds by name."""
    from .world import WORLDS

    others = ", ".join(repr(name) for name in WORLDS if name != "world")
    return f"'world' (default), {others}, a diffusers folder or a hub id"


def model_family(model: str) -> str | None:
    """The family key of a ``--model`` known before loading ('world' or a folder; None for a hub id)."""
    from .families import family_of_class
    from .world import WORLDS

    if model in WORLDS:
        return WORLDS[model][0]
    folder = Path(model).expanduser()
    if not (folder / "model_index.json").is_file():
        return None
    try:
        return family_of_class(_class_name(folder))
    except ObliviateError:  # a broken folder is check_model's to refuse
        return None


def _class_name(folder: Path) -> str | None:
    """The pipeline class a diffusers folder's model_index.json names."""
    index = folder / "model_index.json"
    try:
        return json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        raise ObliviateError(f"{index} is not valid JSON") from None


def check_device(device: str) -> str:
    """A device's name: cpu, cuda, cuda:N or mps (whether this machine has it is asked once torch is in)."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise ObliviateError(f"unknown device {device!r} (choose cpu, cuda, cuda:N or mps)")
    return device


def world_of(model: Any) -> str | None:
    """The shipped world ``model`` is or was merged from ('world', 'world-sdxl', ...; None: no world): its bench,
    renderings and detector apply. ``model`` is a pipeline (judged by its weights' fingerprint, or by the base
    its folder names and its layout) or, before loading, a ``--model`` name."""
    from .world import WORLDS

    if isinstance(model, str | Path):
        if str(model) in WORLDS:
            return str(model)
        folder = Path(model).expanduser()
        base = derived_from(folder) if folder.is_dir() else None
        return base if base in WORLDS else None
    from .catalog import world_layout, world_weights

    derived = getattr(model, "_obliviate_derived_from", None)
    if derived in WORLDS:
        return derived if world_layout(model, derived) else None
    return next((name for name in WORLDS if world_weights(model, name)), None)


def is_world_based(model: Any) -> bool:
    """Whether ``model`` is a shipped world or a model merged from one (:func:`world_of`)."""
    return world_of(model) is not None


def bench_for(model: str | None, bench: str | Path | None):
    """The bench a command uses, known before the model loads: ``bench``, else the world's for the world and
    models merged from it, else the sd bench."""
    from .bench import load_bench

    return load_bench(bench or (WORLD if model is not None and is_world_based(model) else "sd"))


# -------------------------------------------------------------------------------------------------- concepts


def concept_names(concepts: str | Sequence[str]) -> list[str]:
    """A concept name or names, none empty and none twice."""
    names = [concepts] if isinstance(concepts, str) else list(concepts)
    if not names:
        raise ObliviateError("no concept given")
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise ObliviateError("empty concept name")
    if len(set(names)) != len(names):
        raise ObliviateError("a concept is given twice")
    return names


def name_list(text: str | None, what: str) -> list[str] | None:
    """'a,b' -> ['a', 'b'] (None stays None; an empty list is an error)."""
    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ObliviateError(f"{what} is empty")
    return names


def check_concepts(model: str | None, bench: str | Path | None, names: Sequence[str], strict: bool) -> None:
    """``names`` against the bench the command will use. ``strict``: even off the world (evaluations and attacks
    need the bench's prompts); an erasure on a real model accepts any name (a model knows more than a bench)."""
    concept_names(list(names))
    if strict or bench is not None or (model is not None and is_world_based(model)):
        known = bench_for(model, bench)
        for name in names:
            known.concept(name)


# ---------------------------------------------------------------------------------------------------- files


def check_files(model: str | None, patches: Sequence[str | Path] = (), keys: Sequence[str | Path] = (),
                passphrase: str | None = None, force: bool = False, signature: str | Path | None = None) -> None:
    """Patch and key headers: each exists and is what it claims; with ``signature``, each carries a valid
    signature by that public key; a patch made for another model than the world is refused before the world
    loads."""
    metas = [patch_metadata(p) for p in patches]
    for k in keys:
        check_key_file(k, passphrase)
    if signature is not None:
        from .signing import load_public_key, verify_file

        public = load_public_key(signature)
        for path in [*patches, *keys]:
            verify_file(path, public)
    family = model_family(model) if model is not None else None
    for path, meta in zip(patches, metas, strict=True):
        if family is not None and meta.get("family", family) != family:
            from .families import family_name

            raise ObliviateError(f"{path} was made for a {family_name(meta['family'])} model; {model} is a "
                                 f"{family_name(family)} model")
    world = world_of(model) if model is not None else None
    if world is not None and not force:
        from .world import world_info

        layout = (world_info(world).get("fingerprint") or {}).get("layout")
        for path, meta in zip(patches, metas, strict=True):
            want = (meta.get("base_fingerprint") or {}).get("layout")
            if layout and want and want != layout:
                raise ObliviateError(f"{path} was made for model {meta.get('base_model', 'another model')}, not "
                                     f"{'the world' if world == WORLD else world} (use --force to apply anyway)")


def passphrase_from(variable: str | None) -> str | None:
    """The passphrase in environment variable ``variable`` (never from argv)."""
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ObliviateError(f"--passphrase-env {variable}: the environment variable is not set or empty")
    return value


def output_file(path: str | Path, suffix: str | None = None) -> Path:
    """An output file that can be written (and ends in ``suffix``)."""
    if suffix is not None and not str(path).endswith(suffix):
        raise ObliviateError(f"{path}: the output must end in {suffix}")
    return check_writable(path)


def new_folder(path: str | Path, what: str) -> Path:
    """A folder to create (whole, at the end): it must not exist, and its parent must take it."""
    path = Path(path)
    if path.exists():
        raise ObliviateError(f"{what} {path} exists: give a new folder")
    check_writable(path)
    return path


def output_folder(path: str | Path, what: str, files: Sequence[str] = ()) -> Path:
    """A folder to write ``files`` into, made with its parents if need be: existing or creatable, and writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ObliviateError(f"{what} {path} exists and is not a folder")
    if path.is_dir():
        for name in files or [".probe"]:
            check_writable(path / name)
        return path
    ancestor = next(p for p in path.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise ObliviateError(f"{what} {path}: {ancestor} is not a folder")
    check_writable(ancestor / path.absolute().relative_to(ancestor).parts[0])
    return path


def check_count(value: int | None, what: str, least: int = 1) -> None:
    """A count given in Python (the command line's parser checks its own)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
        raise ObliviateError(f"{what} must be a whole number >= {least}, got {value!r}")


# -------------------------------------------------------------------------------------------------- attacks


def attack_request(attacks: str | Sequence[str] | None, edited: bool, keys: Sequence = ()) -> list[str]:
    """The attacks an evaluation runs: names checked, and an edit to attack (the base model is attacked with
    ``attack``); with keys installed, the key-learning attack is left out of "all" (and refused by name)."""
    from .attacks import attack_names, with_keys

    names = attack_names(attacks)
    if names and not edited:
        raise ObliviateError("attacks in an evaluation need a patch (or keys) to attack; attack the base model "
                             "with obliviate attack")
    return with_keys(names, attacks, keys) if names else names


def oracle_request(model: str, patches: Sequence[str | Path], oracle: str | Path | bool | None,
                   concepts: Sequence[str] = ()) -> Path | None:
    """The oracle world a command compares with, found and checked before any model loads (the patches' concepts
    read from their headers): see :func:`resolve_oracle`."""
    return resolve_oracle(model, erased_by([patch_metadata(p).get("concepts", []) for p in patches], concepts),
                          oracle)


def erased_by(patch_concepts: Sequence[Sequence[str]], concepts: Sequence[str] = ()) -> list[str]:
    """The concepts an oracle must never have seen: those the patches erased (in order, once each), else
    ``concepts`` (an attack on the base model: the attacked one)."""
    return list(dict.fromkeys(c for erased in patch_concepts for c in erased)) or list(concepts)


def resolve_oracle(model: Any, erased: Sequence[str], oracle: str | Path | bool | None) -> Path | None:
    """The oracle's folder (None: none asked): ``oracle`` True finds the one without ``erased`` (the concepts the
    model under test erased, or the attacked one), a folder must be that one (with ``erased`` empty, the folder's
    own). ``model`` (a ``--model`` name or a pipeline) must be the world or a model merged from it."""
    if oracle is None or oracle is False:
        return None
    from .world.oracle import check_oracle, find_oracle

    world = world_of(model)
    if world is None:
        raise ObliviateError("--oracle is the world retrained without the concept: the model must be the world or "
                             "a model merged from it")
    if world != WORLD:
        raise ObliviateError(f"the oracles are the SD world's, retrained; {world} has none yet (compare against "
                             "them on --model world)")
    if oracle is True:
        if not erased:
            raise ObliviateError("which oracle? With no patch, give the oracle's folder (--oracle DIR, oracle=DIR)")
        return find_oracle(erased)
    folder = Path(oracle).expanduser()
    return check_oracle(folder, list(erased) or (oracle_without(folder) or []))
