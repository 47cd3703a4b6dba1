"""The ``obliviate world`` commands: build the embedded world from scratch, or describe the shipped one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TextIO

from .. import preflight as pf
from ..flags import count, emit, log


def cmd_world_build(args: argparse.Namespace) -> int:
    out = pf.output_folder(args.out, "--out")
    from .recipe import BuildConfig, build

    cfg = BuildConfig(seed=args.seed)
    if args.quick:  # a smoke run: every stage, a handful of steps
        cfg.n_images, cfg.vae_steps, cfg.detector_steps, cfg.unet_steps, cfg.n_heldout = 512, 3, 3, 3, 64
    for name in ("vae_steps", "detector_steps", "unet_steps", "n_images"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    info = build(out, cfg, log=log, bar=not args.no_progress)
    print(json.dumps({"path": str(out), "seconds": info["build"]["seconds"],
                      "detector_accuracy": info["detector_accuracy"]}))
    return 0


def cmd_world_info(args: argparse.Namespace) -> int:
    from . import world_dir, world_info

    if args.json not in (None, "-"):
        pf.output_file(args.json)
    info = world_info()
    payload = {"path": str(world_dir() / "pipeline"), "concepts": info["concepts"]}

    def human(out: TextIO) -> None:
        print(f"world pipeline: {payload['path']}", file=out)
        for c in info["concepts"]:
            also = [s for s in c["synonyms"] if s != c["name"]]
            print(f"  {c['category']:<7} {c['name']}" + (f" (also: {', '.join(also)})" if also else ""), file=out)

    emit(args.json, payload, None if args.json else human)
    return 0


def add_world_commands(sub, command: Callable, common: Callable) -> None:
    """``world build`` and ``world info`` under ``sub`` (``command`` makes a subcommand; ``common`` adds the
    shared options)."""
    world = sub.add_parser("world", help="the embedded world: a tiny Stable Diffusion and its concept domain",
                           description="The embedded world: build it from scratch or describe the shipped one.")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="ACTION")
    b = command("build", cmd_world_build, "train the world (VAE, text encoder, UNet, detector) from scratch",
                "Train the whole world deterministically (about 25 min on 2 CPU cores).", wsub)
    b.add_argument("--out", required=True, metavar="DIR", help="folder to write (replaced atomically when done)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0: the shipped world)")
    b.add_argument("--quick", action="store_true", help="smoke run: every stage with a handful of steps")
    for stage in ("vae", "detector", "unet"):
        b.add_argument(f"--{stage}-steps", type=count, help=f"the {stage}'s training steps (default: the recipe's)")
    b.add_argument("--n-images", type=count, help="rendered training images (default: the recipe's)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    common(command("info", cmd_world_info, "where the shipped world is and which concepts it knows",
                   "Print the shipped world's pipeline folder and concepts.", wsub), "{path, concepts}",
           device=False, seed=False)

