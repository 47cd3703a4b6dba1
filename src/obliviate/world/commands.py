"""The ``obliviate world`` commands: build the embedded world from scratch, or describe the shipped one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .. import preflight as pf
from ..errors import ObliviateError
from ..flags import count, emit, log


def cmd_world_build(args: argparse.Namespace) -> int:
    from .oracle import check_without

    without = check_without(pf.name_list(args.without, "--without")) if args.without is not None else None
    if without and Path(args.out).exists():
        raise ObliviateError(f"--out {args.out} exists: give a new folder for the oracle")
    out = pf.output_folder(args.out, "--out")
    from .oracle import build_oracle
    from .recipe import BuildConfig, build

    cfg = BuildConfig(seed=args.seed)
    if args.quick:  # a smoke run: every stage, a handful of steps
        cfg.n_images, cfg.vae_steps, cfg.detector_steps, cfg.unet_steps, cfg.n_heldout = 512, 3, 3, 3, 64
    for name in ("vae_steps", "detector_steps", "unet_steps", "n_images", "threads"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.family != "sd":
        if without:
            raise ObliviateError(f"--without builds oracles of the SD world only; leave out --family {args.family}")
        from importlib import import_module

        info = import_module(f".{args.family}", __package__).build(out, cfg, log=log, bar=not args.no_progress)
        print(json.dumps({"path": str(out), "family": args.family, "seconds": info["build"]["seconds"]}))
        return 0
    if without:
        record = build_oracle(out, without, cfg, log=log, bar=not args.no_progress)["oracle"]
        print(json.dumps({"path": str(out), "without": without, "seconds": record["build"]["seconds"],
                          "scenes": record["scenes"]}))
        return 0
    info = build(out, cfg, log=log, bar=not args.no_progress)
    print(json.dumps({"path": str(out), "seconds": info["build"]["seconds"],
                      "detector_accuracy": info["detector_accuracy"]}))
    return 0


def cmd_world_info(args: argparse.Namespace) -> int:
    from . import WORLDS, world_available, world_dir, world_info

    if args.json not in (None, "-"):
        pf.output_file(args.json)
    from .oracle import available_oracles

    info = world_info()
    oracles = {name: str(path) for name, path in available_oracles().items()}
    worlds = {name: {"family": family, "path": str(world_dir(name) / "pipeline")}
              for name, (family, _, _) in WORLDS.items() if world_available(name)}
    payload = {"path": str(world_dir() / "pipeline"), "worlds": worlds, "concepts": info["concepts"],
               "oracles": oracles}

    def human(out: TextIO) -> None:
        for name, world in worlds.items():
            print(f"--model {name} ({world['family']}): {world['path']}", file=out)
        for c in info["concepts"]:
            also = [s for s in c["synonyms"] if s != c["name"]]
            print(f"  {c['category']:<7} {c['name']}" + (f" (also: {', '.join(also)})" if also else ""), file=out)
        print("oracles (the world retrained without): " + (", ".join(oracles) or "none built"), file=out)

    emit(args.json, payload, None if args.json else human)
    return 0


def add_world_commands(sub, command: Callable, common: Callable) -> None:
    """``world build`` and ``world info`` under ``sub`` (``command`` makes a subcommand; ``common`` adds the
    shared options)."""
    world = sub.add_parser("world", help="the embedded world: a tiny Stable Diffusion and its concept domain",
                           description="The embedded world: build it from scratch or describe the shipped one.")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="ACTION")
    b = command("build", cmd_world_build, "train the world (VAE, text encoder, UNet, detector) from scratch",
                "Train the whole world deterministically (about 25 min on 2 CPU cores), or, with --without, an oracle: "
                "the world retrained as if those concepts had never been in its data.", wsub)
    b.add_argument("--out", required=True, metavar="DIR", help="folder to write (replaced atomically when done)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0: the shipped world)")
    from . import BUILDABLE

    b.add_argument("--family", choices=BUILDABLE, default="sd",
                   help="the model family to train: sd (default; the whole world: VAE, detector, text encoder, "
                        "UNet), sdxl (a StableDiffusionXLPipeline on the same domain, the SD world's tokenizer, "
                        "VAE and detector: shipped as --model world-sdxl) or sd3 (a StableDiffusion3Pipeline: "
                        "MMDiT, two CLIPs and a T5, flow matching; the same shared parts: shipped as --model "
                        "world-sd3) or flux (a FluxPipeline: double- and single-stream blocks, T5 text tokens, "
                        "flow matching, then guidance distillation; not shipped)")
    b.add_argument("--without", metavar="NAME[,NAME...]",
                   help="an oracle: retrain the UNet and text encoder on the recipe's scenes minus every one that "
                        "shows these concepts (tokenizer, VAE and detector: the shipped world's; about 21 min; "
                        "default: the whole world)")
    b.add_argument("--quick", action="store_true", help="smoke run: every stage with a handful of steps")
    for stage in ("vae", "detector", "unet"):
        b.add_argument(f"--{stage}-steps", type=count, help=f"the {stage}'s training steps (default: the recipe's)")
    b.add_argument("--n-images", type=count, help="rendered training images (default: the recipe's)")
    b.add_argument("--threads", type=count, help="torch threads (default: the recipe's; a world is reproduced "
                   "bit for bit at the thread count it was built with, which its world.json records)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    info = command("info", cmd_world_info, "where the shipped world is and which concepts it knows",
                   "Print the shipped worlds' pipeline folders (one per model family), concepts and oracles.", wsub)
    common(info, "{path, worlds, concepts, oracles}", device=False, seed=False)

