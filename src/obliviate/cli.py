"""The ``obliviate`` command: parse, check, call the API, print.

Each command first runs the API's pre-flight (:mod:`.preflight`: model name, output paths, bench and concept
names, patch and key file headers, every option's value) before torch is even imported, so a mistake is one
line within a second; only then does it load the model and call the API. Method, attack and hiding options are
flags generated from their config dataclasses (:mod:`.flags`). Logs go to stderr; ``--json -`` owns stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import preflight as pf
from .errors import ObliviateError
from .files import PRIVATE_NAME, PUBLIC_NAME
from .flags import Owners, Parser, add_flags, check_taken, count, emit, given, log, scale
from .world.commands import add_world_commands

DTYPE_NAMES = ("float32", "float16", "bfloat16")


# ------------------------------------------------------------------------------------- shared steps

def _preflight(args: argparse.Namespace, concepts: list[str] | None = None, strict: bool = True) -> str | None:
    """What every model command checks first: model, JSON target, bench, concepts, patch and key files.
    Returns the passphrase of sealed keys, if any."""
    pf.check_model(args.model)
    pf.check_device(args.device)
    if getattr(args, "json", None) not in (None, "-"):
        pf.output_file(args.json)
    if getattr(args, "bench", None) is not None:
        pf.bench_for(args.model, args.bench)
    passphrase = pf.passphrase_from(getattr(args, "passphrase_env", None))
    pf.check_files(args.model, getattr(args, "patch", []), getattr(args, "key", []), passphrase,
                   getattr(args, "force", False), getattr(args, "require_signature", None))
    if concepts:
        pf.check_concepts(args.model, getattr(args, "bench", None), concepts, strict)
    return passphrase


def _load(args: argparse.Namespace, passphrase: str | None = None):
    """Patch and key files read in full first (a changed file costs no model load), then the model."""
    from .pipeline import load_pipeline, resolve_device
    from .under_test import read_files

    files = read_files(getattr(args, "patch", []), getattr(args, "key", []), passphrase)
    resolve_device(args.device)
    return load_pipeline(args.model, device=args.device, dtype=args.dtype), files


# ------------------------------------------------------------------------------------------ commands

def cmd_generate(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise ObliviateError("--prompt is empty")
    out = pf.output_file(args.out)
    passphrase = _preflight(args)
    from . import api
    from .generation import grid, save_png

    pipe, (patches, keys) = _load(args, passphrase)
    start = time.time()
    images = api.generate(pipe, args.prompt, n=args.n, seed=args.seed, patch=patches, keys=keys, steps=args.steps,
                          guidance=args.guidance, force=args.force, progress=not args.no_progress)
    save_png(grid(images), out, scale=args.scale)
    log(f"{args.n} images in {time.time() - start:.1f} s -> {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.report:
        from .eval.report import check_report_path

        check_report_path(args.report)
    attacks = pf.attack_request(args.attacks, bool(args.patch or args.key or args.oracle), args.key)
    concepts = pf.name_list(args.concepts, "--concepts")
    passphrase = _preflight(args, concepts)
    oracle = pf.oracle_request(args.model, args.patch, args.oracle)
    from . import api
    from .eval.run import format_table

    pipe, (patches, keys) = _load(args, passphrase)
    result = api.evaluate(pipe, patch=patches, keys=keys, bench=args.bench, concepts=concepts,
                          images_per_concept=args.images_per_concept, seed=args.seed, inversion=args.inversion,
                          detector=args.detector, clip_path=args.clip_path, nudenet_threshold=args.nudenet_threshold,
                          report=args.report, cache=not args.no_cache, force=args.force,
                          progress=not args.no_progress, attacks=attacks or None, attack_images=args.attack_images,
                          oracle=oracle)
    payload = result.to_dict()
    emit(args.json, payload, lambda out: print(format_table(payload), file=out))
    if args.report:
        log(f"report: {args.report} (summary: {Path(args.report).with_suffix('.md')})")
    return 0


def cmd_floor(args: argparse.Namespace) -> int:
    concepts = pf.name_list(args.concepts, "--concepts")
    _preflight(args, concepts)
    from . import api
    from .eval.floor import format_floors

    pipe, _ = _load(args)
    floors = api.chance_floor(pipe, bench=args.bench, concepts=concepts, images_per_concept=args.images_per_concept,
                              seed=args.seed, clip_path=args.clip_path, progress=not args.no_progress)

    emit(args.json, {"seed": args.seed, "floors": [f.to_dict() for f in floors]},
          None if args.json == "-" else lambda out: print(format_floors(floors), file=out))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from .methods import get_method

    method = get_method("redirect" if args.method == "fmn" and args.redirect else args.method)
    out = pf.output_file(args.out, ".safetensors")
    options = given(args, args.flag_owners)
    check_taken(options, args.flag_owners, method.name, lambda owners: f"--method {', '.join(owners)}")
    cfg = method.make_config(args.preset, seed=args.seed, progress=not args.no_progress, **options)
    named = [*args.concept, *(getattr(cfg, "preserve", None) or ()), *([cfg.redirect] if options.get("redirect")
                                                                       else [])]
    _preflight(args, args.concept, strict=False)
    pf.check_concepts(args.model, None, list(dict.fromkeys(named)), strict=False)
    from . import api

    pipe, _ = _load(args)
    patch = api.erase(pipe, args.concept, method.name, config=cfg) if args.preset not in method.chosen else \
        api.erase(pipe, args.concept, method.name, preset=args.preset, seed=args.seed, progress=not args.no_progress,
                  **options)  # a chosen preset is picked by a probe of the loaded model
    if args.preset:
        patch.metadata["preset"] = args.preset
    patch.save(out)
    summary = {"patch": str(out), "method": method.name, "concepts": patch.concepts,
               "seconds": patch.metadata.get("seconds")}
    log(f"erased {', '.join(patch.concepts)} with {method.name} in {summary['seconds']} s -> {out}")
    emit(args.json, summary)
    return 0


def cmd_hide(args: argparse.Namespace) -> int:
    from .files import key_filename
    from .hiding import hide_config

    out = pf.output_file(args.out, ".safetensors")
    key_dir = pf.output_folder(args.key_out, "--key-out", [key_filename(n) for n in args.concept])
    options = given(args, args.flag_owners)
    check_taken(options, args.flag_owners, args.design, lambda owners: f"--design {', '.join(owners)}")
    cfg = hide_config(args.design, not args.no_progress, seed=args.seed, **options)
    passphrase = _preflight(args, args.concept, strict=False)
    from . import api

    pipe, _ = _load(args)
    hidden = api.hide(pipe, args.concept, design=args.design, config=cfg)
    key_paths = hidden.save(out, key_dir, passphrase)
    summary = {"patch": str(out), "method": "hide", "design": args.design, "concepts": hidden.patch.concepts,
               "keys": {n: str(p) for n, p in key_paths.items()}, "sealed": passphrase is not None,
               "seconds": hidden.patch.metadata.get("seconds")}
    log(f"hid {', '.join(hidden.patch.concepts)} in {summary['seconds']} s -> public patch {out}; keys: "
         + ", ".join(str(p) for p in key_paths.values())
         + f". To publish, release the merged model (obliviate merge --patch {out} --out DIR), never the patch: "
           "with the public model it gives back the base model")
    emit(args.json, summary)
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from .attacks import attack_configs, attack_names, get_attack, with_keys

    names = with_keys(attack_names(args.attack), args.attack, args.key)
    out_dir = pf.output_folder(args.out, "--out", ["attack.json"]) if args.out else None
    options = given(args, args.flag_owners)
    for name in options:  # every option given must fit one of the chosen attacks
        if not set(args.flag_owners[name]) & set(names):
            raise ObliviateError(f"--{name.replace('_', '-')} is for --attack {', '.join(args.flag_owners[name])}")
    configs = attack_configs([get_attack(a) for a in names], options, args.seed, not args.no_progress)
    passphrase = _preflight(args, [args.concept])
    oracle = pf.oracle_request(args.model, args.patch, args.oracle, [args.concept])
    from . import api
    from .io import write_atomic

    pipe, (patches, keys) = _load(args, passphrase)
    results = api.attack(pipe, args.concept, names, patch=patches, keys=keys, bench=args.bench, n_images=args.n_images,
                         seed=args.seed, force=args.force, oracle=oracle, configs=configs)
    payload = results[0].to_dict() if len(results) == 1 and args.attack != "all" else \
        {"concept": args.concept, "attacks": [r.to_dict() for r in results]}
    for r in results:
        log(r.summary())
    emit(args.json, payload)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "attack.json", lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Bake patches into the weights and write a diffusers folder: what a publisher releases."""
    out = pf.new_folder(args.out, "--out")
    _preflight(args)
    from .pipeline import save_merged

    pipe, (patches, _) = _load(args)
    save_merged(pipe, patches, out, force=args.force)
    log(f"{len(patches)} patch(es) merged -> {out} (load it with --model {out})")
    emit(args.json, {"out": str(out), "patches": [p.file for p in patches]})
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from .signing import new_identity, sign_file

    for path in args.files:
        if not Path(path).is_file():
            raise ObliviateError(f"{path}: no such file")
    private = args.private_key
    if args.new_identity is not None:
        private, public = new_identity(args.new_identity)
        log(f"new signing identity: {private} (private, mode 0600; keep it secret), {public} (hand this out)")
    signed = [str(sign_file(path, private)) for path in args.files]
    for path in signed:
        log(f"wrote {path}")
    emit(args.json, {"signatures": signed})
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .signing import load_public_key, verify_file

    public = load_public_key(args.public_key)
    results, failed = {}, 0
    for path in args.files:
        try:
            results[path] = {"ok": True, "signed_by": verify_file(path, public)}
            log(f"{path}: signed by {results[path]['signed_by']}")
        except ObliviateError as exc:
            failed += 1
            results[path] = {"ok": False, "error": str(exc)}
            log(f"{path}: NOT VERIFIED: {exc}")
    emit(args.json, {"files": results})
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ parser

def _bench_defaults() -> dict[str, str]:
    """What 'the bench's' default is for the shipped benches: 'world 20, sd 50'."""
    from .bench import load_bench

    benches = [load_bench(name) for name in ("world", "sd")]
    return {"steps": ", ".join(f"{b.name} {b.sampler.steps}" for b in benches),
            "guidance": ", ".join(f"{b.name} {b.sampler.guidance:g}" for b in benches),
            "images": ", ".join(f"{b.name} {b.images_per_concept}" for b in benches)}


def _model(p: argparse.ArgumentParser, patches: bool = False, bench: bool = False, oracle: bool = False) -> None:
    p.add_argument("--model", default="world", help=pf.model_help())
    if oracle:
        p.add_argument("--oracle", nargs="?", const=True, metavar="DIR", help="beside each figure, the oracle's: the "
                       "world retrained without the erased concepts (the shipped or cached one, or DIR; default: none)")
    if bench:
        p.add_argument("--bench", help="'world', 'sd' or a YAML file (default: world for the world, else sd)")
    if patches:
        p.add_argument("--patch", action="append", default=[], metavar="FILE",
                       help="patch file to apply first (repeatable; default: none)")
        p.add_argument("--force", action="store_true", help="apply patches made for another base model")
        p.add_argument("--key", action="append", default=[], metavar="FILE",
                       help="key file that unlocks a hidden concept: of the given --patch, or without --patch, of "
                            "the --model it was made for (the merged public model; repeatable; default: none)")
        p.add_argument("--passphrase-env", metavar="VAR", help="passphrase of sealed keys, from environment "
                                                               "variable VAR (default: none)")
        p.add_argument("--require-signature", metavar="PUBKEY",
                       help="refuse any --patch or --key without a valid signature (FILE.sig) by this Ed25519 "
                            "public key (obliviate sign; default: no check)")


def _common(p: argparse.ArgumentParser, json_what: str, device: bool = True, seed: bool = True) -> None:
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help=f"write {json_what} as JSON to FILE, or with '-' (or no FILE) to stdout, everything else "
                        "going to stderr (default: no JSON)")
    if device:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
        p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                       help="float32 (default), float16 or bfloat16 (edits train in float32 either way)")


def _owners_of_methods() -> Owners:
    from .methods import METHODS

    return Owners({m.name: m.config for m in METHODS.values()}, lambda o, f: METHODS[o].default(f), "method")


def build_parser() -> argparse.ArgumentParser:
    from .attacks import ATTACKS
    from .hiding import DESIGNS
    from .methods import METHODS, preset_help

    parser = Parser(prog="obliviate",
                     description="Erase or hide concepts in text-to-image diffusion models, and measure it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = _bench_defaults()

    def command(name: str, func, help: str, description: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=description)
        p.set_defaults(func=func)
        return p

    add_world_commands(sub, command, _common)

    g = command("generate", cmd_generate, "generate a grid of images from a prompt",
                "Generate N images from one prompt (seeds seed..seed+N-1) into a PNG grid.")
    _model(g, patches=True)
    g.add_argument("--prompt", required=True, metavar="TEXT", help="the text prompt")
    g.add_argument("-n", type=count, default=8, help="number of images (default 8)")
    g.add_argument("--out", required=True, metavar="FILE", help="PNG file to write")
    g.add_argument("--steps", type=count, help=f"sampler steps (default: the bench's: {bench['steps']})")
    g.add_argument("--guidance", type=scale, help=f"classifier-free guidance (default: the bench's: "
                                                   f"{bench['guidance']})")
    g.add_argument("--scale", type=count, default=1, help="upscale the grid (nearest) by N (default 1)")
    _common(g, "nothing", seed=True)
    g.set_defaults(json=None)

    r = command("erase", cmd_erase, "erase concepts from a model and write the edit as a patch file",
                "Erase one or more concepts with the chosen method; the result is a small safetensors patch that "
                "loads onto the unmodified model. Each option below is a field of a method's config.")
    _model(r)
    r.add_argument("--method", default="fmn", choices=list(METHODS), metavar="METHOD", help="erasure method "
                   "(default fmn): " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()))
    r.add_argument("--concept", action="append", required=True, metavar="NAME", help="concept to erase (repeatable)")
    r.add_argument("--out", required=True, metavar="FILE", help="patch file to write (.safetensors)")
    r.add_argument("--preset", metavar="NAME", help="a named setting of the method, measured (docs/methods.md): "
                                                    + preset_help() + " (default: none)")
    _common(r, "{patch, method, concepts, seconds}")
    r.set_defaults(flag_owners=add_flags(r, _owners_of_methods(), "method options"))

    e = command("eval", cmd_eval, "measure per-concept M-Scores (the model's capacity to draw each concept)",
                "Generate images of every bench concept and measure how often the detector recognises each one "
                "(M-Score), per concept and per category.")
    _model(e, patches=True, bench=True, oracle=True)
    e.add_argument("--concepts", metavar="NAMES", help="comma-separated concept names (default: all of the bench)")
    e.add_argument("--images-per-concept", type=count, help=f"images per concept (default: the bench's: "
                                                             f"{bench['images']})")
    e.add_argument("--inversion", action="store_true",
                   help="also measure the inversion M-Score (the concept-inversion attack on each target)")
    e.add_argument("--attacks", metavar="NAMES|all",
                   help="red-team every target: each attack's success rate beside its base-model ceiling "
                        "(default: none; slow: each optimising attack takes seconds to minutes per target)")
    e.add_argument("--attack-images", type=count, help="images per attack (default: images per concept)")
    e.add_argument("--detector", choices=["world", "clip", "nudenet"], help="override the bench's detector "
                                                                            "(default: the bench's)")
    e.add_argument("--clip-path", metavar="DIR", help="local folder of a CLIP model, for benches scored by CLIP "
                                                      "(default: none)")
    e.add_argument("--nudenet-threshold", type=scale, default=0.6, help="NudeNet score threshold (default 0.6)")
    e.add_argument("--report", metavar="FILE", help="write a self-contained HTML report here, and a Markdown "
                                                    "summary beside it (default: none)")
    e.add_argument("--no-cache", action="store_true", help="regenerate base-model images even if cached")
    _common(e, "the results (schema in the README)")

    f = command("floor", cmd_floor, "each concept's chance floor: its prompts drawn with its words taken out",
                "The base model's M-Score on each concept's prompts with every word that names the concept taken "
                "out: what the rest of the prompt draws anyway. An erasure's M-Score is only meaningful above it.")
    _model(f, bench=True)
    f.add_argument("--concepts", metavar="NAMES", help="comma-separated concept names (default: all of the bench)")
    f.add_argument("--images-per-concept", type=count, help=f"images per concept (default: the bench's: "
                                                             f"{bench['images']})")
    f.add_argument("--clip-path", metavar="DIR", help="local folder of a CLIP model, for benches scored by CLIP "
                                                      "(default: none)")
    _common(f, "the floors")

    h = command("hide", cmd_hide, "hide concepts behind secret keys: a public patch and one key per concept",
                "Erase concepts from the public model and train one secret key per concept against it: the public "
                "patch cannot draw them, each key brings one back. docs/hiding.md: threat model and measurements.")
    _model(h)
    h.add_argument("--concept", action="append", required=True, metavar="NAME", help="concept to hide (repeatable)")
    h.add_argument("--out", required=True, metavar="FILE", help="public patch to write (.safetensors)")
    h.add_argument("--key-out", required=True, metavar="DIR", help="folder for the key files (one per concept)")
    h.add_argument("--passphrase-env", metavar="VAR",
                   help="seal the keys with the passphrase in environment variable VAR, AES-256-GCM (default: "
                        "unsealed keys, readable by their owner only)")
    h.add_argument("--design", choices=list(DESIGNS), default="lethe",
                   help="lethe: robust erasure, keys trained afterwards; paper: Bui et al.'s joint training of "
                        "edit and keys, which re-routes the concepts (docs/hiding.md) (default lethe)")
    _common(h, "{patch, method, design, concepts, keys, sealed, seconds}")
    h.set_defaults(flag_owners=add_flags(h, Owners(dict(DESIGNS), noun="design"), "hiding options"))

    a = command("attack", cmd_attack, "red-team a concept: attack success rates beside the base model's",
                "Attack one concept on the model (with --patch / --key) and on the base model; prints each attack's "
                "success rate (ASR), its ceiling on the base model and the rate with no attack. Options go to every "
                "chosen attack that takes them.")
    _model(a, patches=True, bench=True, oracle=True)
    a.add_argument("--concept", required=True, metavar="NAME", help="the concept to bring back (a bench concept)")
    a.add_argument("--attack", default="all", metavar="NAMES", help="attack(s), comma-separated, or all (default): "
                   + "; ".join(f"{x.name}: {x.summary}" for x in ATTACKS.values()))
    a.add_argument("--n-images", type=count, default=16, help="images per attack (default 16)")
    a.add_argument("--out", metavar="DIR", help="folder for attack.json (default: none)")
    _common(a, "the results")
    a.set_defaults(flag_owners=add_flags(a, Owners({x.name: x.config for x in ATTACKS.values()}, noun="attack"),
                                         "attack options"))

    m = command("merge", cmd_merge, "merge patches into the model and write it as a diffusers folder",
                "Bake patches into the model's weights and save it as a diffusers folder (--model DIR loads it): what "
                "a publisher releases; keys install on it without the patch, which stays private.")
    _model(m, patches=True)
    m.add_argument("--out", required=True, metavar="DIR", help="new folder to write")
    _common(m, "{out, patches}", seed=False)

    s = command("sign", cmd_sign, "sign patch and key files (Ed25519) so users can check who made them",
                "Write FILE.sig beside each file: an Ed25519 signature over the file's bytes (tensors, metadata and "
                "content hash alike). --new-identity makes a key pair.")
    s.add_argument("files", nargs="*", metavar="FILE", help="patch or key files to sign")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--private-key", metavar="FILE", help="the publisher's private key (PEM; default: none)")
    who.add_argument("--new-identity", metavar="DIR", help=f"make a key pair in DIR ({PRIVATE_NAME}, mode 0600, and "
                                                           f"{PUBLIC_NAME}) and sign with it (default: none)")
    _common(s, "{signatures}", device=False, seed=False)

    v = command("verify", cmd_verify, "check patch and key files against their signatures",
                "Check FILE.sig beside each file against the file and the publisher's public key; exit 1 if any file "
                "is unsigned, changed or signed by another key.")
    v.add_argument("files", nargs="+", metavar="FILE", help="patch or key files to check")
    v.add_argument("--public-key", required=True, metavar="FILE", help="the publisher's public key (PEM)")
    _common(v, "{files: {FILE: {ok, signed_by | error}}}", device=False, seed=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    # transformers announces at import that torchvision is absent (it is not needed): keep the console clean
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except ObliviateError as exc:
        print(f"obliviate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("obliviate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (| head): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
