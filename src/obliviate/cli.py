"""The ``obliviate`` command: parse arguments, check every input, call the library, print results.

Each command runs in two phases. ``check_*`` looks at everything that needs no model (numbers, output paths,
bench and concept names, patch and key file headers) before torch is even imported, so a mistake is one line
within a second; only then does ``run_*`` load the model and work. Logs and progress go to stderr; with
``--json -`` stdout carries the JSON and nothing else.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .errors import ObliviateError
from .files import PRIVATE_NAME, PUBLIC_NAME

DTYPE_NAMES = ("float32", "float16", "bfloat16")


# ------------------------------------------------------------------------------------------ argument types

def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole(text, 0)


def _number(text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"must be a finite number {'>' if positive else '>='} 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    return _number(text, positive=False)


def _positive_float(text: str) -> float:
    return _number(text, positive=True)


def _at_most_one(text: str, positive: bool, what: str) -> float:
    value = _number(text, positive)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be {what} in {'(' if positive else '['}0, 1], got {text}")
    return value


def _schedule_fraction(text: str) -> float:
    return _at_most_one(text, True, "a fraction of the schedule")


def _share(text: str) -> float:
    return _at_most_one(text, False, "a share")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and help texts that may be completed only when help is asked for
    (per-method defaults need the method modules, and with them torch)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self.complete_help: Callable[[_Parser], None] | None = None

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def format_help(self) -> str:
        if self.complete_help is not None:
            self.complete_help(self)
            self.complete_help = None
        return super().format_help()


class _Formatter(argparse.HelpFormatter):
    """Short metavars: N for counts, X for numbers, else the option's last word."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        if action.type in (int, _positive_int):
            return "N"
        if action.type in (float, _non_negative_float, _positive_float):
            return "X"
        return action.dest.rsplit("_", 1)[-1].upper()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _emit(target: str | None, payload: dict, human: Callable[[TextIO], None] | None = None) -> None:
    """``--json FILE``: write it atomically; ``--json -``: the JSON alone on stdout (the human-readable output,
    if any, then goes to stderr); no ``--json``: only the human-readable output, on stdout."""
    from .io import write_atomic

    text = json.dumps(payload, indent=2)
    if human is not None:
        human(sys.stderr if target == "-" else sys.stdout)
    if target == "-":
        print(text, flush=True)
    elif target:
        write_atomic(target, lambda tmp: tmp.write_text(text + "\n"))
        _log(f"wrote {target}")


# ----------------------------------------------------------------------------------------- shared checks

def _check_json_target(args: argparse.Namespace) -> None:
    from .io import check_writable

    if getattr(args, "json", None) not in (None, "-"):
        check_writable(args.json)


def _check_model(args: argparse.Namespace) -> None:
    """A --model that can only be a folder (not 'world', not a hub id 'org/name') must exist."""
    model = args.model
    if model == "world" or Path(model).expanduser().is_dir():
        return
    parts = model.split("/")
    hub_id = len(parts) == 2 and all(parts) and not Path(model).exists()
    if model.startswith((".", "/", "~")) or (os.sep in model and not hub_id):
        raise ObliviateError(f"--model {model}: no such folder")


def _world_based(args: argparse.Namespace) -> bool:
    """The world, or a folder merged from it (it names its base), known before the model loads."""
    from .files import derived_from

    folder = Path(args.model).expanduser()
    return args.model == "world" or (folder.is_dir() and derived_from(folder) == "world")


def _bench_of(args: argparse.Namespace):
    """The bench the command will use, known before the model loads: --bench, else world for the world and
    models merged from it (other models: the sd bench)."""
    from .bench import load_bench

    spec = getattr(args, "bench", None) or ("world" if _world_based(args) else "sd")
    return load_bench(spec)


def _check_concepts(args: argparse.Namespace, names: list[str], strict: bool) -> None:
    """Concept names against the bench. ``strict``: even off the world (eval and attacks need the bench's
    prompts); erase/hide on another model accept any name (a real model knows more than a bench)."""
    if not all(n.strip() for n in names):
        raise ObliviateError("empty concept name")
    if len(set(names)) != len(names):
        raise ObliviateError("a concept is given twice")
    if strict or getattr(args, "bench", None) or _world_based(args):
        bench = _bench_of(args)
        for name in names:
            bench.concept(name)


def _concept_list(text: str | None, option: str) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ObliviateError(f"{option} is empty")
    return names


def _check_patch_files(args: argparse.Namespace) -> None:
    """Patch and key headers (no torch): each exists and is what it claims; a patch made for another model than
    the world is refused before the world loads."""
    from .files import check_key_file, patch_metadata

    metas = [patch_metadata(p) for p in getattr(args, "patch", [])]
    passphrase = _passphrase(args)
    for k in getattr(args, "key", []):
        check_key_file(k, passphrase)
    if getattr(args, "require_signature", None):
        from .signing import load_public_key, verify_file

        public = load_public_key(args.require_signature)
        for path in [*args.patch, *args.key]:
            verify_file(path, public)
    if args.model == "world" and not getattr(args, "force", False):
        from .world import world_info

        layout = (world_info().get("fingerprint") or {}).get("layout")
        for path, meta in zip(args.patch, metas, strict=True):
            want = (meta.get("base_fingerprint") or {}).get("layout")
            if layout and want and want != layout:
                raise ObliviateError(f"{path} was made for model {meta.get('base_model', 'another model')}, not "
                                     "the world (use --force to apply anyway)")


def _passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase from the environment variable named by ``--passphrase-env`` (never from argv)."""
    var = getattr(args, "passphrase_env", None)
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ObliviateError(f"--passphrase-env {var}: the environment variable is not set or empty")
    return value


def _safetensors_out(path: str) -> Path:
    from .io import check_writable

    if not path.endswith(".safetensors"):
        raise ObliviateError(f"{path}: the output must end in .safetensors")
    return check_writable(path)


def _pipeline(args: argparse.Namespace):
    """Device checked before the model is read; then the API's load_pipeline."""
    from .pipeline import load_pipeline, resolve_device

    resolve_device(args.device)
    return load_pipeline(args.model, device=args.device, dtype=args.dtype)


def _patches_and_keys(args: argparse.Namespace):
    """Patch and key files read in full and bound (hashes, key-to-patch; without a patch, each key must name
    the public model it is for, checked once the model is loaded) before the model is loaded."""
    from .hiding import load_keys
    from .patch import Patch

    patches = [Patch.load(p) for p in args.patch]
    return patches, load_keys(args.key, patches, _passphrase(args))


# --------------------------------------------------------------------------------------------------- world

def cmd_world_build(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ObliviateError(f"--out {out} exists and is not a folder")
    if not os.access(out.parent if out.parent.exists() else Path("."), os.W_OK):
        raise ObliviateError(f"cannot write into {out.parent}")
    from .world.recipe import BuildConfig, build

    cfg = BuildConfig(seed=args.seed)
    if args.quick:  # a smoke run: every stage, a handful of steps
        cfg.n_images, cfg.vae_steps, cfg.detector_steps, cfg.unet_steps, cfg.n_heldout = 512, 3, 3, 3, 64
    for name in ("vae_steps", "detector_steps", "unet_steps", "n_images"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    info = build(out, cfg, log=_log, bar=not args.no_progress)
    print(json.dumps({"path": str(out), "seconds": info["build"]["seconds"],
                      "detector_accuracy": info["detector_accuracy"]}))
    return 0


def cmd_world_info(args: argparse.Namespace) -> int:
    from .world import world_dir, world_info

    _check_json_target(args)
    info = world_info()
    payload = {"path": str(world_dir() / "pipeline"), "concepts": info["concepts"]}

    def human(out: TextIO) -> None:
        print(f"world pipeline: {payload['path']}", file=out)
        for c in info["concepts"]:
            syn = f" (also: {', '.join(s for s in c['synonyms'] if s != c['name'])})" \
                if len(c["synonyms"]) > 1 else ""
            print(f"  {c['category']:<7} {c['name']}{syn}", file=out)

    _emit(args.json, payload, None if args.json else human)
    return 0


# ------------------------------------------------------------------------------------------------ generate

def cmd_generate(args: argparse.Namespace) -> int:
    from .io import check_writable

    if not args.prompt.strip():
        raise ObliviateError("--prompt is empty")
    _check_model(args)
    out = check_writable(args.out)
    _check_patch_files(args)

    from . import api
    from .generation import grid, save_png

    patches, keys = _patches_and_keys(args)
    pipe = _pipeline(args)
    start = time.time()
    images = api.generate(pipe, args.prompt, n=args.n, seed=args.seed, patch=patches, keys=keys, steps=args.steps,
                          guidance=args.guidance, force=args.force, progress=not args.no_progress)
    save_png(grid(images), out, scale=args.scale)
    _log(f"{args.n} images in {time.time() - start:.1f} s -> {out}")
    return 0


# ---------------------------------------------------------------------------------------------------- eval

def cmd_eval(args: argparse.Namespace) -> int:
    from .attacks import attack_names, with_keys

    _check_model(args)
    _check_json_target(args)
    if args.report:
        from .eval.report import check_report_path

        check_report_path(args.report)
    attacks = attack_names(args.attacks) if args.attacks is not None else None
    if attacks and not args.patch:
        raise ObliviateError("--attacks needs a --patch to attack; attack the base model with obliviate attack")
    attacks = with_keys(attacks, args.attacks, args.key) if attacks else attacks
    concepts = _concept_list(args.concepts, "--concepts")
    _bench_of(args)  # a bad spec is reported before the model loads
    _check_patch_files(args)
    if concepts is not None:
        _check_concepts(args, concepts, strict=True)

    from . import api
    from .eval.run import format_table

    patches, keys = _patches_and_keys(args)
    pipe = _pipeline(args)
    detector = None
    if args.detector is not None:
        from .catalog import catalog_for
        from .eval.detectors import make_detector

        detector = make_detector(args.detector, catalog_for(pipe, args.bench).bench, args.clip_path,
                                 nudenet_threshold=args.nudenet_threshold)
    result = api.evaluate(pipe, patch=patches, keys=keys, bench=args.bench, concepts=concepts,
                          images_per_concept=args.images_per_concept, seed=args.seed, inversion=args.inversion,
                          detector=detector, clip_path=args.clip_path, nudenet_threshold=args.nudenet_threshold,
                          report=args.report, cache=not args.no_cache, force=args.force,
                          progress=not args.no_progress, attacks=attacks, attack_images=args.attack_images)
    payload = result.to_dict()
    _emit(args.json, payload, lambda out: print(format_table(payload), file=out))
    if args.report:
        _log(f"report: {args.report} (summary: {Path(args.report).with_suffix('.md')})")
    return 0


def cmd_floor(args: argparse.Namespace) -> int:
    _check_model(args)
    _check_json_target(args)
    concepts = _concept_list(args.concepts, "--concepts")
    _bench_of(args)
    if concepts is not None:
        _check_concepts(args, concepts, strict=True)

    from . import api

    pipe = _pipeline(args)
    floors = api.chance_floor(pipe, bench=args.bench, concepts=concepts, images_per_concept=args.images_per_concept,
                              seed=args.seed, clip_path=args.clip_path, progress=not args.no_progress)

    def table(out: TextIO) -> None:
        print("| concept | floor | 95% interval | images | prompts without the concept's words |", file=out)
        print("|---|---|---|---|---|", file=out)
        for f in floors:
            print(f"| {f.concept} | {f.m:.3f} | [{f.interval[0]:.3f}, {f.interval[1]:.3f}] | {f.n_images} | "
                  + "; ".join(repr(p) for p in f.prompts) + " |", file=out)

    _emit(args.json, {"seed": args.seed, "floors": [f.to_dict() for f in floors]}, None if args.json == "-" else table)
    return 0


# --------------------------------------------------------------------------------------------------- erase

# erase options that map one to one onto fields of the method configs (checked against the chosen method)
_ERASE_OPTIONS = ("steps", "lr", "batch_size", "trainable", "rank", "inversion_tokens", "images", "redirect",
                  "include_eot", "guide", "preserve_weight", "preserve", "x_t_from", "ddim_steps", "rounds",
                  "t_max", "adversary_steps", "weight_adversary_steps", "keep_weight", "keep_neighbours",
                  "neutral_rows")


def cmd_erase(args: argparse.Namespace) -> int:
    from .methods import get_method

    method = get_method("redirect" if args.method == "fmn" and args.redirect else args.method)
    _check_model(args)
    out = _safetensors_out(args.out)
    _check_json_target(args)
    # "is not": a 0 the user gave (0 == False) is a value, not an absent option
    given = {k: v for k in _ERASE_OPTIONS if (v := getattr(args, k)) is not None and v is not False}
    _check_concepts(args, args.concept, strict=False)
    if "preserve" in given:
        given["preserve"] = tuple(_concept_list(given["preserve"], "--preserve"))
        _check_concepts(args, list(given["preserve"]), strict=False)
    if "redirect" in given:
        _check_concepts(args, [given["redirect"]], strict=False)
    # the method's options live on its config dataclass, in the method's module (which imports torch): last
    unsupported = sorted(set(given) - method.option_names())
    if unsupported:
        raise ObliviateError(f"method {method.name} does not take --{unsupported[0].replace('_', '-')}")
    method.make_config(**given)  # every value checked before the model loads

    from . import api

    pipe = _pipeline(args)
    patch = api.erase(pipe, args.concept, method.name, progress=not args.no_progress, seed=args.seed, **given)
    patch.save(out)
    summary = {"patch": str(out), "method": method.name, "concepts": patch.concepts,
               "seconds": patch.metadata.get("seconds")}
    _log(f"erased {', '.join(patch.concepts)} with {method.name} in {summary['seconds']} s -> {out}")
    _emit(args.json, summary)
    return 0


# ---------------------------------------------------------------------------------------------------- hide

def cmd_hide(args: argparse.Namespace) -> int:
    from .files import key_filename
    from .io import check_writable

    _check_model(args)
    out = _safetensors_out(args.out)
    _check_json_target(args)
    key_dir = Path(args.key_out)
    if key_dir.exists() and not key_dir.is_dir():
        raise ObliviateError(f"--key-out {key_dir} exists and is not a folder")
    if key_dir.is_dir():
        for name in args.concept:
            check_writable(key_dir / key_filename(name))
    else:  # the folder is made with its parents: the nearest existing one must take it
        ancestor = next(p for p in key_dir.absolute().parents if p.exists())
        if not ancestor.is_dir():
            raise ObliviateError(f"--key-out {key_dir}: {ancestor} is not a folder")
        check_writable(ancestor / key_dir.absolute().relative_to(ancestor).parts[0])
    passphrase = _passphrase(args)
    _check_concepts(args, args.concept, strict=False)
    overrides = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size}
    only = {"paper": ("tokens", "placement"),
            "lethe": ("rounds", "images", "neutral_rows", "weight_adversary_steps", "key_steps", "key_rank")}
    for design, names in only.items():
        for name in names:
            value = getattr(args, name)
            if value is not None and args.design != design:
                raise ObliviateError(f"--{name.replace('_', '-')} is for --design {design}")
            overrides[name] = value

    from . import api

    pipe = _pipeline(args)
    hidden = api.hide(pipe, args.concept, design=args.design, seed=args.seed, progress=not args.no_progress,
                      **{k: v for k, v in overrides.items() if v is not None})
    key_paths = hidden.save(out, key_dir, passphrase)
    summary = {"patch": str(out), "method": "hide", "design": args.design, "concepts": hidden.patch.concepts,
               "keys": {n: str(p) for n, p in key_paths.items()}, "sealed": passphrase is not None,
               "seconds": hidden.patch.metadata.get("seconds")}
    _log(f"hid {', '.join(hidden.patch.concepts)} in {summary['seconds']} s -> public patch {out}; keys: "
         + ", ".join(str(p) for p in key_paths.values())
         + f". To publish, release the merged model (obliviate merge --patch {out} --out DIR), never the patch: "
           "with the public model it gives back the base model")
    _emit(args.json, summary)
    return 0


# -------------------------------------------------------------------------------------------------- attack

def _reached(details: dict) -> str:
    """A learning attack's verdict: the steps it needed to bring the concept back, beside the base model's."""
    reach, budget = details["reach"], details["budget"]
    mine = (f"reached {reach} after {details['steps_to_reach']} steps ({details['seconds_to_reach']:.1f} s)"
            if details["steps_to_reach"] is not None else f"did not reach {reach} within {budget} steps")
    if "base_steps_to_reach" not in details:
        return mine
    base = details["base_steps_to_reach"]
    return mine + (f"; on the base model after {base} steps" if base is not None else "; not on the base model")


def cmd_attack(args: argparse.Namespace) -> int:
    from .attacks import attack_names, with_keys
    from .io import check_writable, write_atomic

    names = with_keys(attack_names(args.attack), args.attack, args.key)
    _check_model(args)
    _check_json_target(args)
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise ObliviateError(f"--out {out_dir} exists and is not a folder")
        check_writable(out_dir / "attack.json") if out_dir.is_dir() else check_writable(out_dir)
    _check_concepts(args, [args.concept], strict=True)
    _check_patch_files(args)

    config = {"steps": args.steps} if args.steps is not None else {}
    if args.key_form is not None:
        if "memory" not in names:
            raise ObliviateError("--key-form is for the key-learning attack (--attack memory)")
        config["form"] = args.key_form

    from . import api

    patches, keys = _patches_and_keys(args)
    pipe = _pipeline(args)
    results = api.attack(pipe, args.concept, names if args.attack == "all" or "," in args.attack else names[0],
                         patch=patches, keys=keys, bench=args.bench, n_images=args.n_images, seed=args.seed,
                         force=args.force, progress=not args.no_progress, **config)
    results = results if isinstance(results, list) else [results]
    payload = results[0].to_dict() if len(results) == 1 and args.attack != "all" else \
        {"concept": args.concept, "attacks": [r.to_dict() for r in results]}
    for r in results:
        base = "n/a" if r.asr_base is None else f"{r.asr_base:.3f}"
        _log(f"{r.attack}: ASR {r.asr:.3f} (base model {base}, no attack {r.asr_no_attack:.3f}; "
             f"{r.n_images} images, {r.seconds:.1f} s)")
        if "steps_to_reach" in r.details:
            _log(f"  {_reached(r.details)}")
    _emit(args.json, payload)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "attack.json", lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))
    return 0


# -------------------------------------------------------------------------------------------- sign, verify

def cmd_merge(args: argparse.Namespace) -> int:
    """Bake patches into the model's weights and write the result as a diffusers folder: what a publisher
    releases (the patch file itself stays private: the merged weights minus it are the base model)."""
    from .io import check_writable

    _check_model(args)
    _check_json_target(args)
    out = Path(args.out)
    if out.exists():
        raise ObliviateError(f"--out {out} exists: give a new folder")
    check_writable(out)
    _check_patch_files(args)

    from .patch import Patch
    from .pipeline import save_merged

    patches = [Patch.load(p) for p in args.patch]
    save_merged(_pipeline(args), patches, out, force=args.force)
    _log(f"{len(patches)} patch(es) merged -> {out} (load it with --model {out})")
    _emit(args.json, {"out": str(out), "patches": [p.file for p in patches]})
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from .signing import new_identity, sign_file

    for path in args.files:
        if not Path(path).is_file():
            raise ObliviateError(f"{path}: no such file")
    private = args.private_key
    if args.new_identity is not None:
        private, public = new_identity(args.new_identity)
        _log(f"new signing identity: {private} (private, mode 0600; keep it secret), {public} (hand this out)")
    signed = [str(sign_file(path, private)) for path in args.files]
    for path in signed:
        _log(f"wrote {path}")
    _emit(args.json, {"signatures": signed})
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .signing import load_public_key, verify_file

    public = load_public_key(args.public_key)
    results, failed = {}, 0
    for path in args.files:
        try:
            results[path] = {"ok": True, "signed_by": verify_file(path, public)}
            _log(f"{path}: signed by {results[path]['signed_by']}")
        except ObliviateError as exc:
            failed += 1
            results[path] = {"ok": False, "error": str(exc)}
            _log(f"{path}: NOT VERIFIED: {exc}")
    _emit(args.json, {"files": results})
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------- parser

def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value) if value == "" else str(value)


def _default(method, option: str):
    """A method's default for ``option``; None resolved where the method resolves it at run time."""
    value = method.default(option)
    if value is None and (method.name, option) == ("prompt", "steps"):
        from .methods.prompt import ERASE_STEPS

        return ERASE_STEPS
    return value


def _method_defaults(option: str) -> str:
    """'fmn 35; esd-x, esd-u 400; ...': the default of ``option`` in each method that takes it."""
    from .methods import METHODS

    groups: dict[str, list[str]] = {}
    for m in METHODS.values():
        if option in m.option_names():
            groups.setdefault(_fmt(_default(m, option)), []).append(m.name)
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items())


def _complete_bench_help(parser: _Parser) -> None:
    """Sampler and image-count defaults come from the bench: say what they are for the shipped ones."""
    from .bench import load_bench

    benches = [load_bench(name) for name in ("world", "sd")]
    values = {"steps": [f"{b.name} {b.sampler.steps}" for b in benches],
              "guidance": [f"{b.name} {_fmt(b.sampler.guidance)}" for b in benches],
              "images_per_concept": [f"{b.name} {b.images_per_concept}" for b in benches]}
    for action in parser._actions:
        if action.dest in values:
            action.help = action.help.replace("the bench's", f"the bench's: {', '.join(values[action.dest])}")


def _complete_erase_help(parser: _Parser) -> None:
    for action in parser._actions:
        if action.dest in _ERASE_OPTIONS and action.dest not in ("preserve", "redirect", "images", "include_eot"):
            action.help = f"{action.help} (default: {_method_defaults(action.dest)})"


def _complete_hide_help(parser: _Parser) -> None:
    from .hiding import STEPS_PER_CONCEPT, HideConfig
    from .methods import METHODS
    from .methods.prompt import HIDE_STEPS

    ours, memory = HideConfig(), METHODS["prompt"]  # the paper's design trains the learnable prompt's memory
    for action in parser._actions:
        if action.dest in ("steps", "lr", "batch_size"):
            paper = HIDE_STEPS if action.dest == "steps" else memory.default(action.dest)
            value = f"{STEPS_PER_CONCEPT} per concept" if action.dest == "steps" else _fmt(getattr(ours, action.dest))
            action.help = f"{action.help} (default {value}; paper: {_fmt(paper)})"
        elif action.dest in ("tokens", "placement"):
            action.help = f"{action.help} (default {_fmt(memory.default(action.dest))})"
        elif action.dest in ("rounds", "images", "neutral_rows", "weight_adversary_steps", "key_steps", "key_rank"):
            action.help = f"{action.help} (default {_fmt(getattr(ours, action.dest))})"


def _complete_attack_help(parser: _Parser) -> None:
    from dataclasses import MISSING, fields

    from .attacks import ATTACKS

    budgets = []
    for a in ATTACKS.values():
        steps = {f.name: f.default for f in fields(a.config)}.get("steps", MISSING)
        if steps is not MISSING:
            budgets.append(f"{a.name} {steps}")
    for action in parser._actions:
        if action.dest == "steps":
            action.help = f"{action.help} (default: {'; '.join(budgets)})"


def build_parser() -> argparse.ArgumentParser:
    from .attacks import ATTACKS
    from .methods import METHODS

    parser = _Parser(
        prog="obliviate", description="Erase or hide concepts in text-to-image diffusion models, and measure it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = sub.add_parser("world", help="the embedded world: a tiny Stable Diffusion and its concept domain",
                           description="The embedded world: build it from scratch or describe the shipped one.")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="ACTION")
    b = wsub.add_parser("build", help="train the world (VAE, text encoder, UNet, detector) from scratch",
                        description="Train the whole world deterministically (about 25 min on 2 CPU cores).")
    b.add_argument("--out", required=True, metavar="DIR", help="folder to write (replaced atomically when done)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0: the shipped world)")
    b.add_argument("--quick", action="store_true", help="smoke run: every stage with a handful of steps")
    b.add_argument("--vae-steps", type=_positive_int, help="the VAE's training steps (default: the recipe's)")
    b.add_argument("--detector-steps", type=_positive_int, help="the detector's training steps (default: the "
                                                                "recipe's)")
    b.add_argument("--unet-steps", type=_positive_int, help="the UNet's training steps (default: the recipe's)")
    b.add_argument("--n-images", type=_positive_int, help="rendered training images (default: the recipe's)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_world_build)
    i = wsub.add_parser("info", help="where the shipped world is and which concepts it knows",
                        description="Print the shipped world's pipeline folder and concepts.")
    _json_argument(i, "{path, concepts}")
    i.set_defaults(func=cmd_world_info)

    g = sub.add_parser("generate", help="generate a grid of images from a prompt",
                       description="Generate N images from one prompt (seeds seed..seed+N-1) into a PNG grid.")
    _model_argument(g)
    g.add_argument("--prompt", required=True, metavar="TEXT", help="the text prompt")
    g.add_argument("-n", type=_positive_int, default=8, help="number of images (default 8)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--out", required=True, metavar="FILE", help="PNG file to write")
    g.add_argument("--steps", type=_positive_int, help="sampler steps (default: the bench's)")
    g.add_argument("--guidance", type=_non_negative_float, help="classifier-free guidance scale (default: the "
                                                                "bench's)")
    g.add_argument("--scale", type=_positive_int, default=1, help="upscale the grid (nearest) by N (default 1)")
    _patch_arguments(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(g)
    g.set_defaults(func=cmd_generate)
    g.complete_help = _complete_bench_help

    r = sub.add_parser("erase", help="erase concepts from a model and write the edit as a patch file",
                       description="Erase one or more concepts with the chosen method; the result is a small "
                                   "safetensors patch that loads onto the unmodified model.")
    _model_argument(r)
    r.add_argument("--method", default="fmn", choices=list(METHODS), metavar="METHOD",
                   help="erasure method (default fmn): "
                        + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()))
    r.add_argument("--concept", action="append", required=True, metavar="NAME", help="concept to erase (repeatable)")
    r.add_argument("--out", required=True, metavar="FILE", help="patch file to write (.safetensors)")
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    r.add_argument("--steps", type=_positive_int, help="training steps (fmn: per concept)")
    r.add_argument("--lr", type=_positive_float, help="learning rate")
    r.add_argument("--batch-size", type=_positive_int, help="batch size")
    r.add_argument("--trainable", choices=["attn2-qk", "attn2", "unet", "lora", "text-encoder"],
                   help="what to edit (FMN with --redirect: attn2)")
    r.add_argument("--rank", type=_positive_int, help="LoRA rank with --trainable lora")
    r.add_argument("--inversion-tokens", type=int, help="FMN stage A: learn N tokens first (0: off)")
    r.add_argument("--images", metavar="SOURCE", help="images of the concept: 'generate' (the base model's) or a "
                                                     "folder (default: the catalog's: renderings on the world, "
                                                     "base-model generations elsewhere)")
    r.add_argument("--redirect", metavar="NAME", help="redirect: the concept's prompts now draw NAME (with --method "
                                                      "fmn this selects --method redirect; no default)")
    r.add_argument("--include-eot", action="store_true", help="FMN: also re-steer the (first) end-of-text token")
    r.add_argument("--guide", metavar="WORD", help="UCE, RECE: word the concept is mapped onto ('': the prompt "
                                                   "without it)")
    r.add_argument("--rounds", type=_positive_int, help="RECE: rounds of derive-and-erase; lethe: concept-inversion "
                                                       "rounds against the edit so far")
    r.add_argument("--t-max", type=_schedule_fraction, metavar="FRACTION",
                   help="lethe: the forget term's noisiest level, as a fraction of the schedule")
    r.add_argument("--adversary-steps", type=_non_negative_int, metavar="N",
                   help="lethe: steps of the persistent concept-inversion adversary per training step (0: off)")
    r.add_argument("--weight-adversary-steps", type=_non_negative_int, metavar="N",
                   help="lethe: steps per training step of the fine-tuning adversary, a LoRA trained to bring "
                        "the concept back, under which the concept is erased too (0: off)")
    r.add_argument("--keep-weight", type=_non_negative_float, metavar="X",
                   help="lethe: weight of the keep term (every other concept distilled from the frozen model)")
    r.add_argument("--keep-neighbours", type=_share, metavar="SHARE",
                   help="lethe: share of the keep term's rows drawn from the erased concepts' own categories")
    r.add_argument("--neutral-rows", type=_non_negative_int, metavar="N",
                   help="lethe: forget rows per step added under the neutral prompt alone (what diffusion "
                        "completion denoises with; default 0)")
    r.add_argument("--preserve", metavar="NAMES", help="comma-separated concepts to keep (default: every other "
                                                       "concept of the bench)")
    r.add_argument("--preserve-weight", type=_non_negative_float,
                   help="FMN: weight of the preservation anchor (lower erases more, keeps less; 0: the paper's "
                        "loss); advunlearn, stereo: weight of the retain term")
    r.add_argument("--x-t-from", choices=["edited", "frozen"], help="ESD: which model draws x_t")
    r.add_argument("--ddim-steps", type=_positive_int, help="partial-sampling steps")
    _json_argument(r, "{patch, method, concepts, seconds}")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(r)
    r.set_defaults(func=cmd_erase)
    r.complete_help = _complete_erase_help

    e = sub.add_parser("eval", help="measure per-concept M-Scores (the model's capacity to draw each concept)",
                       description="Generate images of every bench concept and measure how often the detector "
                                   "recognises each one (M-Score), per concept and per category.")
    _model_argument(e)
    _patch_arguments(e)
    _bench_argument(e)
    e.add_argument("--concepts", metavar="NAMES", help="comma-separated concept names (default: all of the bench)")
    e.add_argument("--images-per-concept", type=_positive_int, help="images per concept (default: the bench's)")
    e.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    e.add_argument("--inversion", action="store_true",
                   help="also measure the inversion M-Score (the concept-inversion attack on each target)")
    e.add_argument("--attacks", metavar="NAMES|all",
                   help="red-team every target: each attack's success rate beside its base-model ceiling "
                        "(default: none; slow: each optimising attack takes seconds to minutes per target)")
    e.add_argument("--attack-images", type=_positive_int, help="images per attack (default: images per concept)")
    e.add_argument("--detector", choices=["world", "clip", "nudenet"], help="override the bench's detector "
                                                                            "(default: the bench's)")
    e.add_argument("--clip-path", metavar="DIR", help="local folder of a CLIP model, for benches scored by CLIP "
                                                      "(default: none)")
    e.add_argument("--nudenet-threshold", type=_non_negative_float, default=0.6,
                   help="NudeNet score threshold (default 0.6)")
    _json_argument(e, "the results (schema in the README)")
    e.add_argument("--report", metavar="FILE", help="write a self-contained HTML report here, and a Markdown "
                                                    "summary beside it (default: none)")
    e.add_argument("--no-cache", action="store_true", help="regenerate base-model images even if cached")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(e)
    e.set_defaults(func=cmd_eval)
    e.complete_help = _complete_bench_help

    f = sub.add_parser("floor", help="each concept's chance floor: its prompts drawn with its words taken out",
                       description="The base model's M-Score on each concept's prompts with every word that names "
                                   "the concept taken out: what the rest of the prompt draws anyway. An erasure's "
                                   "M-Score is only meaningful above it.")
    _model_argument(f)
    _bench_argument(f)
    f.add_argument("--concepts", metavar="NAMES", help="comma-separated concept names (default: all of the bench)")
    f.add_argument("--images-per-concept", type=_positive_int, help="images per concept (default: the bench's)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    f.add_argument("--clip-path", metavar="DIR", help="local folder of a CLIP model, for benches scored by CLIP "
                                                      "(default: none)")
    _json_argument(f, "the floors")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(f)
    f.set_defaults(func=cmd_floor)
    f.complete_help = _complete_bench_help

    h = sub.add_parser("hide", help="hide concepts behind secret keys: a public patch and one key per concept",
                       description="Erase concepts from the public model (a robust Lethe erasure) and train one "
                                   "secret key per concept against it: the public patch cannot draw them, each key "
                                   "brings one back. docs/hiding.md: threat model and measurements.")
    _model_argument(h)
    h.add_argument("--concept", action="append", required=True, metavar="NAME", help="concept to hide (repeatable)")
    h.add_argument("--out", required=True, metavar="FILE", help="public patch to write (.safetensors)")
    h.add_argument("--key-out", required=True, metavar="DIR", help="folder for the key files (one per concept)")
    h.add_argument("--passphrase-env", metavar="VAR",
                   help="seal the keys with the passphrase in environment variable VAR, AES-256-GCM (default: "
                        "unsealed keys, readable by their owner only)")
    h.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    h.add_argument("--design", choices=["lethe", "paper"], default="lethe",
                   help="lethe: robust erasure, keys trained afterwards; paper: Bui et al.'s joint training of "
                        "edit and keys, which re-routes the concepts (docs/hiding.md) (default lethe)")
    h.add_argument("--steps", type=_positive_int, help="training steps of the public patch")
    h.add_argument("--lr", type=_positive_float, help="learning rate of the weight edit")
    h.add_argument("--rounds", type=_non_negative_int, metavar="N",
                   help="design lethe: adversarial rounds of the erasure")
    h.add_argument("--images", type=_positive_int, help="design lethe: images of each concept to train on")
    h.add_argument("--neutral-rows", type=_non_negative_int, metavar="N",
                   help="design lethe: forget rows per step added under the neutral prompt alone")
    h.add_argument("--weight-adversary-steps", type=_non_negative_int, metavar="N",
                   help="design lethe: steps per training step of the fine-tuning adversary on the weights "
                        "(0: off)")
    h.add_argument("--key-steps", type=_positive_int, help="design lethe: training steps of each key")
    h.add_argument("--key-rank", type=_positive_int,
                   help="design lethe: rank of each key's LoRA on every attn2 projection")
    h.add_argument("--batch-size", type=_positive_int, help="batch size")
    h.add_argument("--tokens", type=_positive_int, help="design paper: prompt-memory tokens per key")
    h.add_argument("--placement", choices=["mid", "mid+up", "all"],
                   help="design paper: blocks that get the prompt memory")
    _json_argument(h, "{patch, method, design, concepts, keys, sealed, seconds}")
    h.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(h)
    h.set_defaults(func=cmd_hide)
    h.complete_help = _complete_hide_help

    a = sub.add_parser("attack", help="red-team a concept: attack success rates beside the base model's",
                       description="Attack one concept on the model (with --patch / --key) and on the base model; "
                                   "prints each attack's success rate (ASR), its ceiling on the base model and the "
                                   "rate with no attack.")
    _model_argument(a)
    _patch_arguments(a)
    a.add_argument("--concept", required=True, metavar="NAME", help="the concept to bring back (a bench concept)")
    a.add_argument("--attack", default="all", metavar="NAMES",
                   help="attack(s), comma-separated, or all (default): " + "; ".join(
                       f"{x.name}: {x.summary}" for x in ATTACKS.values()))
    _bench_argument(a)
    a.add_argument("--n-images", type=_positive_int, default=16, help="images per attack (default 16)")
    a.add_argument("--steps", type=_positive_int, help="optimisation budget of optimising attacks")
    a.add_argument("--key-form", choices=["memory", "lora"],
                   help="the key-learning attack's key: a prompt memory (the paper's keys) or a LoRA on every "
                        "attn2 projection (the keys of hide --design lethe) (default memory)")
    a.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _json_argument(a, "the results")
    a.add_argument("--out", metavar="DIR", help="folder for attack.json (default: none)")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(a)
    a.set_defaults(func=cmd_attack)
    a.complete_help = _complete_attack_help

    m = sub.add_parser("merge", help="merge patches into the model and write it as a diffusers folder",
                       description="Bake one or more patches into the model's weights and save the pipeline as a "
                                   "diffusers folder (load it with --model DIR). This is what a publisher of a "
                                   "hiding releases: keys install on it without the patch, and the patch file "
                                   "stays private (the merged model minus the patch is the base model).")
    _model_argument(m)
    m.add_argument("--patch", action="append", required=True, metavar="FILE", help="patch file (repeatable)")
    m.add_argument("--out", required=True, metavar="DIR", help="new folder to write")
    m.add_argument("--force", action="store_true", help="merge patches made for another base model")
    m.add_argument("--require-signature", metavar="PUBKEY",
                   help="refuse any --patch without a valid signature (FILE.sig) by this Ed25519 public key "
                        "(default: no check)")
    _json_argument(m, "{out, patches}")
    _device_arguments(m)
    m.set_defaults(func=cmd_merge)

    s = sub.add_parser("sign", help="sign patch and key files (Ed25519) so users can check who made them",
                       description="Write FILE.sig beside each file: an Ed25519 signature over the file's bytes "
                                   "(tensors, metadata and content hash alike). --new-identity makes a key pair.")
    s.add_argument("files", nargs="*", metavar="FILE", help="patch or key files to sign")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--private-key", metavar="FILE", help="the publisher's private key (PEM; default: none)")
    who.add_argument("--new-identity", metavar="DIR",
                     help=f"make a key pair in DIR ({PRIVATE_NAME}, mode 0600, and {PUBLIC_NAME}) and sign with it "
                          "(default: none)")
    _json_argument(s, "{signatures}")
    s.set_defaults(func=cmd_sign)

    v = sub.add_parser("verify", help="check patch and key files against their signatures",
                       description="Check FILE.sig beside each file against the file and the publisher's public "
                                   "key; exit 1 if any file is unsigned, changed or signed by another key.")
    v.add_argument("files", nargs="+", metavar="FILE", help="patch or key files to check")
    v.add_argument("--public-key", required=True, metavar="FILE", help="the publisher's public key (PEM)")
    _json_argument(v, "{files: {FILE: {ok, signed_by | error}}}")
    v.set_defaults(func=cmd_verify)
    return parser


def _model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="world", help="'world' (default), a diffusers folder, or a hub id")


def _bench_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench", help="'world', 'sd' or a YAML file (default: world for the world, else sd)")


def _json_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help=f"write {what} as JSON to FILE, or with '-' (or no FILE) to stdout, everything else "
                             "going to stderr (default: no JSON)")


def _patch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patch", action="append", default=[], metavar="FILE",
                        help="patch file to apply first (repeatable; default: none)")
    parser.add_argument("--force", action="store_true", help="apply patches made for another base model")
    parser.add_argument("--key", action="append", default=[], metavar="FILE",
                        help="key file that unlocks a hidden concept: of the given --patch, or without --patch, of "
                             "the --model it was made for (the merged public model; repeatable; default: none)")
    parser.add_argument("--passphrase-env", metavar="VAR", help="passphrase of sealed keys, from environment "
                                                                "variable VAR (default: none)")
    parser.add_argument("--require-signature", metavar="PUBKEY",
                        help="refuse any --patch or --key without a valid signature (FILE.sig) by this Ed25519 "
                             "public key (obliviate sign; default: no check)")


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                        help="float32 (default), float16 or bfloat16 (edits train in float32 either way)")


def main(argv: list[str] | None = None) -> int:
    # transformers announces at import that torchvision is absent (it is not needed): keep the console clean
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ObliviateError as exc:
        print(f"obliviate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("obliviate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
