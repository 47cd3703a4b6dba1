"""The ``obliviate`` command: parse arguments, call the library, print results. Logs go to stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import ObliviateError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- world

def cmd_world_build(args: argparse.Namespace) -> int:
    from .world.recipe import BuildConfig, build

    cfg = BuildConfig(seed=args.seed)
    if args.quick:  # a smoke run: every stage, a handful of steps
        cfg.n_images, cfg.vae_steps, cfg.detector_steps, cfg.unet_steps, cfg.n_heldout = 512, 3, 3, 3, 64
    for name in ("vae_steps", "detector_steps", "unet_steps", "n_images"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ObliviateError(f"--out {out} exists and is not a folder")
    if not os.access(out.parent if out.parent.exists() else Path("."), os.W_OK):
        raise ObliviateError(f"cannot write into {out.parent}")
    info = build(out, cfg, log=_log, bar=not args.no_progress)
    print(json.dumps({"path": str(out), "seconds": info["build"]["seconds"],
                      "detector_accuracy": info["detector_accuracy"]}))
    return 0


def cmd_world_info(args: argparse.Namespace) -> int:
    from .world import world_dir, world_info

    info = world_info()
    payload = {"path": str(world_dir() / "pipeline"), "concepts": info["concepts"]}
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    print(f"world pipeline: {payload['path']}")
    for c in info["concepts"]:
        syn = f" (also: {', '.join(s for s in c['synonyms'] if s != c['name'])})" if len(c["synonyms"]) > 1 else ""
        print(f"  {c['category']:<7} {c['name']}{syn}")
    return 0


# ------------------------------------------------------------------------------------------------- shared

def _pipeline(args: argparse.Namespace):
    """Device and dtype are checked before the model is read; then the API's load_pipeline."""
    from .pipeline import load_pipeline, resolve_device, resolve_dtype

    resolve_device(args.device)
    resolve_dtype(args.dtype)
    return load_pipeline(args.model, device=args.device, dtype=args.dtype)


def _safetensors_out(path: str):
    from .io import check_writable

    out = check_writable(path)
    if out.suffix != ".safetensors":
        raise ObliviateError(f"{path}: the output must end in .safetensors")
    return out


def _passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase from the environment variable named by ``--passphrase-env`` (never from argv)."""
    var = getattr(args, "passphrase_env", None)
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ObliviateError(f"--passphrase-env {var}: the environment variable is not set or empty")
    return value


def _patches_and_keys(args: argparse.Namespace):
    """Patch and key files, read and checked (hashes, key-to-patch binding) before the model is loaded."""
    from .hiding import load_keys
    from .patch import Patch

    patches = [Patch.load(p) for p in args.patch]
    return patches, load_keys(args.key, patches, _passphrase(args))


# ------------------------------------------------------------------------------------------------ generate

def cmd_generate(args: argparse.Namespace) -> int:
    from . import api
    from .generation import grid, save_png
    from .io import check_writable

    if not args.prompt.strip():
        raise ObliviateError("--prompt is empty")
    out = check_writable(args.out)
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
    from . import api
    from .bench import load_bench
    from .eval.report import check_report_path
    from .eval.run import format_table
    from .io import check_writable, write_atomic

    if args.json:
        check_writable(args.json)
    if args.report:
        check_report_path(args.report)
    if args.bench:
        load_bench(args.bench)  # a bad spec is reported before the model loads
    attacks = api._attack_names(args.attacks) if args.attacks is not None else None
    if attacks and not args.patch and not args.key:
        raise ObliviateError("--attacks needs a --patch (or --key) to attack; attack the base model with "
                             "obliviate attack")
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()] if args.concepts is not None else None
    if concepts is not None and not concepts:
        raise ObliviateError("--concepts is empty")
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
    print(format_table(result.to_dict()))
    if args.json:
        write_atomic(args.json, lambda tmp: tmp.write_text(result.to_json()))
        _log(f"wrote {args.json}")
    if args.report:
        _log(f"report: {args.report} (summary: {Path(args.report).with_suffix('.md')})")
    return 0


def cmd_floor(args: argparse.Namespace) -> int:
    from . import api
    from .bench import load_bench
    from .io import check_writable, write_atomic

    if args.json and args.json != "-":
        check_writable(args.json)
    if args.bench:
        load_bench(args.bench)
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()] if args.concepts is not None else None
    if concepts is not None and not concepts:
        raise ObliviateError("--concepts is empty")
    pipe = _pipeline(args)
    floors = api.chance_floor(pipe, bench=args.bench, concepts=concepts, images_per_concept=args.images_per_concept,
                              seed=args.seed, clip_path=args.clip_path, progress=not args.no_progress)
    text = json.dumps({"seed": args.seed, "floors": [f.to_dict() for f in floors]}, indent=2)
    if args.json == "-":
        print(text)
    else:
        print("| concept | floor | 95% interval | images | prompts without the concept's words |")
        print("|---|---|---|---|---|")
        for f in floors:
            print(f"| {f.concept} | {f.m:.3f} | [{f.interval[0]:.3f}, {f.interval[1]:.3f}] | {f.n_images} | "
                  + "; ".join(repr(p) for p in f.prompts) + " |")
        if args.json:
            write_atomic(args.json, lambda tmp: tmp.write_text(text + "\n"))
            _log(f"wrote {args.json}")
    return 0


# --------------------------------------------------------------------------------------------------- erase

# erase options that map one to one onto fields of the method configs (checked against the chosen method)
_ERASE_OPTIONS = ("steps", "lr", "batch_size", "trainable", "rank", "inversion_tokens", "images", "redirect",
                  "include_eot", "guide", "preserve_weight", "preserve", "x_t_from", "ddim_steps", "rounds")


def cmd_erase(args: argparse.Namespace) -> int:
    from . import api
    from .methods import get_method

    method = get_method("redirect" if args.method == "fmn" and args.redirect else args.method)
    out = _safetensors_out(args.out)
    given = {k: getattr(args, k) for k in _ERASE_OPTIONS if getattr(args, k) not in (None, False)}
    if "preserve" in given:
        given["preserve"] = tuple(c.strip() for c in given["preserve"].split(",") if c.strip())
    unsupported = sorted(set(given) - method.option_names())
    if unsupported:
        raise ObliviateError(f"method {method.name} does not take --{unsupported[0].replace('_', '-')}")
    if args.lr is not None and not args.lr > 0:
        raise ObliviateError("--lr must be positive")
    method.make_config(**given)  # every value checked before the model loads
    pipe = _pipeline(args)
    patch = api.erase(pipe, args.concept, method.name, progress=not args.no_progress, seed=args.seed, **given)
    patch.save(out)
    summary = {"patch": str(out), "method": method.name, "concepts": patch.concepts,
               "seconds": patch.metadata.get("seconds")}
    if args.json:
        print(json.dumps(summary))
    else:
        _log(f"erased {', '.join(patch.concepts)} with {method.name} in {summary['seconds']} s -> {out}")
    return 0


# ---------------------------------------------------------------------------------------------------- hide

def cmd_hide(args: argparse.Namespace) -> int:
    from . import api
    from .hiding import key_filename
    from .io import check_writable

    out = _safetensors_out(args.out)
    key_dir = Path(args.key_out)
    if key_dir.exists() and not key_dir.is_dir():
        raise ObliviateError(f"--key-out {key_dir} exists and is not a folder")
    if key_dir.is_dir():
        for name in args.concept:
            check_writable(key_dir / key_filename(name))
    passphrase = _passphrase(args)
    overrides = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "tokens": args.tokens,
                 "placement": args.placement}
    if args.lr is not None and not args.lr > 0:
        raise ObliviateError("--lr must be positive")
    pipe = _pipeline(args)
    hidden = api.hide(pipe, args.concept, seed=args.seed, progress=not args.no_progress,
                      **{k: v for k, v in overrides.items() if v is not None})
    key_paths = hidden.save(out, key_dir, passphrase)
    summary = {"patch": str(out), "method": "hide", "concepts": hidden.patch.concepts,
               "keys": {n: str(p) for n, p in key_paths.items()}, "sealed": passphrase is not None,
               "seconds": hidden.patch.metadata.get("seconds")}
    if args.json:
        print(json.dumps(summary))
    else:
        _log(f"hid {', '.join(hidden.patch.concepts)} in {summary['seconds']} s -> public patch {out}; keys: "
             + ", ".join(str(p) for p in key_paths.values()))
    return 0


# -------------------------------------------------------------------------------------------------- attack

def cmd_attack(args: argparse.Namespace) -> int:
    from . import api
    from .bench import load_bench
    from .io import check_writable, write_atomic

    names = api._attack_names(args.attack)
    if args.key and not args.patch:
        raise ObliviateError("--key needs the public patch it belongs to (--patch)")
    if args.steps is not None and args.steps < 1:
        raise ObliviateError(f"--steps: the attack budget must be at least 1, got {args.steps}")
    if args.json and args.json != "-":
        check_writable(args.json)
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise ObliviateError(f"--out {out_dir} exists and is not a folder")
        check_writable(out_dir / "attack.json") if out_dir.is_dir() else check_writable(out_dir)
    load_bench(args.bench or ("world" if args.model == "world" else "sd")).concept(args.concept)
    config = {"steps": args.steps} if args.steps is not None else {}
    patches, keys = _patches_and_keys(args)
    pipe = _pipeline(args)
    results = api.attack(pipe, args.concept, names if args.attack == "all" or "," in args.attack else names[0],
                         patch=patches, keys=keys, bench=args.bench, n_images=args.n_images, seed=args.seed,
                         force=args.force, progress=not args.no_progress, **config)
    results = results if isinstance(results, list) else [results]
    payload = results[0].to_dict() if len(results) == 1 and args.attack != "all" else \
        {"concept": args.concept, "attacks": [r.to_dict() for r in results]}
    text = json.dumps(payload, indent=2)
    for r in results:
        base = "n/a" if r.asr_base is None else f"{r.asr_base:.3f}"
        _log(f"{r.attack}: ASR {r.asr:.3f} (base model {base}, no attack {r.asr_no_attack:.3f}; "
             f"{r.n_images} images, {r.seconds:.1f} s)")
    if args.json == "-":
        print(text)
    elif args.json:
        write_atomic(args.json, lambda tmp: tmp.write_text(text))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "attack.json", lambda tmp: tmp.write_text(text))
    return 0


# ------------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from .attacks import ATTACKS
    from .methods import METHODS

    parser = argparse.ArgumentParser(
        prog="obliviate", description="Erase or hide concepts in text-to-image diffusion models, and measure it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = sub.add_parser("world", help="the embedded world: a tiny Stable Diffusion and its concept domain",
                           description="The embedded world: build it from scratch or describe the shipped one.")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="ACTION")
    b = wsub.add_parser("build", help="train the world (VAE, text encoder, UNet, detector) from scratch",
                        description="Train the whole world deterministically (about 25 min on 2 CPU cores).")
    b.add_argument("--out", required=True, help="folder to write (replaced atomically when done)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0: the shipped world)")
    b.add_argument("--quick", action="store_true", help="smoke run: every stage with a handful of steps")
    b.add_argument("--vae-steps", type=_positive_int, help="override the VAE's training steps")
    b.add_argument("--detector-steps", type=_positive_int, help="override the detector's training steps")
    b.add_argument("--unet-steps", type=_positive_int, help="override the UNet's training steps")
    b.add_argument("--n-images", type=_positive_int, help="override the number of rendered training images")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_world_build)
    i = wsub.add_parser("info", help="where the shipped world is and which concepts it knows",
                        description="Print the shipped world's pipeline folder and concepts.")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_world_info)

    g = sub.add_parser("generate", help="generate a grid of images from a prompt",
                       description="Generate N images from one prompt (seeds seed..seed+N-1) into a PNG grid.")
    g.add_argument("--model", default="world", help="'world' (default), a diffusers folder, or a hub id")
    g.add_argument("--prompt", required=True, help="the text prompt")
    g.add_argument("-n", type=_positive_int, default=8, help="number of images (default 8)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--out", required=True, help="PNG file to write")
    g.add_argument("--steps", type=_positive_int, help="sampler steps (default: the model's)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    g.add_argument("--scale", type=_positive_int, default=1, help="upscale the grid (nearest) by this factor")
    g.add_argument("--patch", action="append", default=[], help="patch file to apply first (repeatable)")
    g.add_argument("--force", action="store_true", help="apply patches made for another base model")
    _key_arguments(g)
    _device_arguments(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("erase", help="erase concepts from a model and write the edit as a patch file",
                       description="Erase one or more concepts with the chosen method; the result is a small "
                                   "safetensors patch that loads onto the unmodified model.")
    r.add_argument("--model", default="world", help="'world' (default), a diffusers folder, or a hub id")
    r.add_argument("--method", default="fmn", choices=list(METHODS), metavar="METHOD",
                   help="erasure method: " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
                        + " (default fmn)")
    r.add_argument("--concept", action="append", required=True, help="concept to erase (repeatable)")
    r.add_argument("--out", required=True, help="patch file to write (.safetensors)")
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    r.add_argument("--steps", type=_positive_int, help="training steps (default: the method's; fmn: per concept)")
    r.add_argument("--lr", type=float, help="learning rate (default: the method's)")
    r.add_argument("--batch-size", type=_positive_int, help="batch size (default: the method's)")
    r.add_argument("--trainable", choices=["attn2-qk", "attn2", "unet", "lora", "text-encoder"],
                   help="what to edit (FMN: default attn2-qk, attn2 with --redirect; advunlearn: default "
                        "text-encoder, or attn2)")
    r.add_argument("--rank", type=_positive_int, help="LoRA rank with --trainable lora (default 4)")
    r.add_argument("--inversion-tokens", type=int, help="FMN stage A: learn K tokens first (default 0: off)")
    r.add_argument("--images", help="images of the concept: 'generate' (the base model's) or a folder (default: "
                                    "the catalog's: renderings on the world, base-model generations elsewhere)")
    r.add_argument("--redirect", metavar="NAME", help="redirect: the concept's prompts now draw NAME (with --method "
                                                      "fmn this selects --method redirect)")
    r.add_argument("--include-eot", action="store_true", help="FMN: also re-steer the (first) end-of-text token")
    r.add_argument("--guide", help="UCE: word the concept is mapped onto (default '': the prompt without it)")
    r.add_argument("--rounds", type=_positive_int, help="RECE: rounds of derive-and-erase (default: 3)")
    r.add_argument("--preserve", help="comma-separated concepts to keep (default: every other concept of the bench)")
    r.add_argument("--preserve-weight", type=_non_negative_float,
                   help="FMN: weight of the preservation anchor (default 300; lower erases more, keeps less; 0: the "
                        "paper's loss); advunlearn: weight of the retain term (default 3)")
    r.add_argument("--x-t-from", choices=["edited", "frozen"],
                   help="ESD: which model draws x_t (default: frozen for esd-x, edited for esd-u)")
    r.add_argument("--ddim-steps", type=_positive_int, help="ESD, prompt: partial-sampling steps (default 10)")
    r.add_argument("--json", action="store_true", help="print {patch, method, concepts, seconds} as JSON")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(r)
    r.set_defaults(func=cmd_erase)

    e = sub.add_parser("eval", help="measure per-concept M-Scores (the model's capacity to draw each concept)",
                       description="Generate images of every bench concept and measure how often the detector "
                                   "recognises each one (M-Score), per concept and per category.")
    e.add_argument("--model", default="world", help="'world' (default), a diffusers folder, or a hub id")
    e.add_argument("--patch", action="append", default=[], help="patch file to apply (repeatable)")
    e.add_argument("--force", action="store_true", help="apply patches made for another base model")
    _key_arguments(e)
    e.add_argument("--bench", help="bench spec: 'world', 'sd' or a YAML file (default: world for the world, "
                                   "else sd)")
    e.add_argument("--concepts", help="comma-separated concept names (default: all of the bench)")
    e.add_argument("--images-per-concept", type=_positive_int, help="images per concept (default: the bench's, "
                                                                    "16 for world)")
    e.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    e.add_argument("--inversion", action="store_true",
                   help="also measure the inversion M-Score (the concept-inversion attack on each target)")
    e.add_argument("--attacks", metavar="NAME[,NAME]|all",
                   help="red-team every target: each attack's success rate beside its base-model ceiling "
                        "(slow: each optimising attack takes seconds to minutes per target)")
    e.add_argument("--attack-images", type=_positive_int, help="images per attack (default: images per concept)")
    e.add_argument("--detector", choices=["world", "clip", "nudenet"], help="override the bench's detector")
    e.add_argument("--clip-path", help="local folder of a CLIP model, for benches scored by CLIP")
    e.add_argument("--nudenet-threshold", type=float, default=0.6, help="NudeNet score threshold (default 0.6)")
    e.add_argument("--json", help="write the results as JSON to this file")
    e.add_argument("--report", help="write a self-contained HTML report here (and a Markdown summary beside it)")
    e.add_argument("--no-cache", action="store_true", help="regenerate base-model images even if cached")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(e)
    e.set_defaults(func=cmd_eval)

    f = sub.add_parser("floor", help="each concept's chance floor: its prompts drawn with its words taken out",
                       description="The base model's M-Score on each concept's prompts with every word that names "
                                   "the concept taken out: what the rest of the prompt draws anyway. An erasure's "
                                   "M-Score is only meaningful above it.")
    f.add_argument("--model", default="world", help="'world' (default), a diffusers folder, or a hub id")
    f.add_argument("--bench", help="bench spec: 'world', 'sd' or a YAML file (default: world for the world, else sd)")
    f.add_argument("--concepts", help="comma-separated concept names (default: all of the bench)")
    f.add_argument("--images-per-concept", type=_positive_int, help="images per concept (default: the bench's)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    f.add_argument("--clip-path", help="local folder of a CLIP model, for benches scored by CLIP")
    f.add_argument("--json", help="write the floors as JSON to this file ('-': to stdout instead of the table)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(f)
    f.set_defaults(func=cmd_floor)

    h = sub.add_parser("hide", help="hide concepts behind secret keys: a public patch and one key per concept",
                       description="Erase concepts from the public model with a learnable prompt that becomes a "
                                   "secret key: the public patch cannot draw them, each key brings one back.")
    h.add_argument("--model", default="world", help="'world' (default), a diffusers folder, or a hub id")
    h.add_argument("--concept", action="append", required=True, help="concept to hide (repeatable)")
    h.add_argument("--out", required=True, help="public patch to write (.safetensors)")
    h.add_argument("--key-out", required=True, help="folder for the key files (one per concept)")
    h.add_argument("--passphrase-env", metavar="VAR",
                   help="seal the keys with the passphrase in environment variable VAR (AES-256-GCM)")
    h.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    h.add_argument("--steps", type=_positive_int, help="training steps (default: the method's)")
    h.add_argument("--lr", type=float, help="learning rate of the weight edit (default: the method's)")
    h.add_argument("--batch-size", type=_positive_int, help="batch size (default: the method's)")
    h.add_argument("--tokens", type=_positive_int, help="prompt-memory tokens per key (default 10)")
    h.add_argument("--placement", choices=["mid", "mid+up", "all"], help="blocks that get the prompt memory")
    h.add_argument("--json", action="store_true", help="print {patch, method, concepts, keys, seconds} as JSON")
    h.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(h)
    h.set_defaults(func=cmd_hide)
    a = sub.add_parser("attack", help="red-team a concept: attack success rates beside the base model's",
                       description="Attack one concept on the model (with --patch / --key) and on the base model; "
                                   "prints each attack's success rate (ASR), its ceiling on the base model and the "
                                   "rate with no attack.")
    a.add_argument("--model", default="world", help="'world' (default), a diffusers folder, or a hub id")
    a.add_argument("--patch", action="append", default=[], help="patch file to apply (repeatable)")
    a.add_argument("--force", action="store_true", help="apply patches made for another base model")
    _key_arguments(a)
    a.add_argument("--concept", required=True, help="the concept to bring back (a bench concept)")
    a.add_argument("--attack", default="all", metavar="NAME",
                   help="attack(s), comma-separated, or all (default): " + "; ".join(
                       f"{x.name}: {x.summary}" for x in ATTACKS.values()))
    a.add_argument("--bench", help="bench spec: 'world', 'sd' or a YAML file (default: world for the world, else sd)")
    a.add_argument("--n-images", type=_positive_int, default=16, help="images per attack (default 16)")
    a.add_argument("--steps", type=int, help="optimisation budget of optimising attacks (default: each attack's)")
    a.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-': stdout)")
    a.add_argument("--out", metavar="DIR", help="folder for attack.json")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    _device_arguments(a)
    a.set_defaults(func=cmd_attack)
    return parser


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32",
                        help="float32 (default), float16 or bfloat16 (edits train in float32 either way)")


def _key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", action="append", default=[], help="key file that unlocks a hidden concept of "
                                                                   "the given --patch (repeatable)")
    parser.add_argument("--passphrase-env", metavar="VAR", help="passphrase of sealed keys, from environment "
                                                                "variable VAR")


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
