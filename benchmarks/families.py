"""Each erasure method's seconds and peak memory per model family: the SD world beside the SDXL and SD3 worlds
(and, on a GPU, random SD- and SDXL-sized layouts); one process per cell, so a peak is that method's alone.

    python benchmarks/families.py [--models world,world-sdxl,world-sd3] [--methods ...] [--concept circle] [--threads 2]
    python benchmarks/families.py --device cuda --models sd-size,sdxl-size --dtype float16   # a GPU, when lent

Memory: on the CPU, the process's peak resident set during the erasure minus its size once the model is
loaded (``ru_maxrss``); on CUDA, ``torch.cuda.max_memory_allocated`` during the erasure. Seconds: the erasure
alone (``obliviate.erase`` with the method's defaults, seed 0). Rows print as they finish.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["fmn", "redirect", "esd-x", "esd-u", "uce", "rece", "advunlearn", "stereo", "prompt", "lethe"]
OPTIONS = {"redirect": {"redirect": "square"}}  # the method needs a target; the world has one for circle


def _layout(name: str, folder: Path) -> str:
    """A random layout at a real model's size (GPU only): written once per run into ``folder``."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from tiny_sd import make_full_size_sdxl, make_tiny_sd

    if name == "sd-size":
        return str(make_tiny_sd(folder, "1.5", full_size=True))
    return str(make_full_size_sdxl(folder))


def one(model: str, method: str, concept: str, device: str, dtype: str, threads: int) -> dict:
    """Run in a child process: load, erase once, report seconds and peak memory."""
    import torch

    import obliviate

    torch.set_num_threads(threads)
    pipe = obliviate.load_pipeline(model, device=device, dtype=dtype)
    bench = None if model.startswith("world") else "sd"
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    obliviate.erase(pipe, concept, method, bench=bench, seed=0, progress=False, **OPTIONS.get(method, {}))
    seconds = time.time() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - loaded
    return {"seconds": round(seconds, 1), "peak_mb": round(peak, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from obliviate.world import WORLDS

    ap.add_argument("--models", default=",".join(WORLDS), help="worlds, folders, or (GPU) sd-size / sdxl-size")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--concept", default="circle")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, method = args.child.split("|")
        print(json.dumps(one(model, method, args.concept, args.device, args.dtype, args.threads)))
        return
    print(f"machine: {platform.machine()}, {args.threads} CPU threads, device {args.device}, dtype {args.dtype}; "
          f"concept {args.concept}, each method's defaults, seed 0\n")
    models = args.models.split(",")
    print("| method | " + " | ".join(f"{m} s | {m} peak MB" for m in models) + " |")
    print("|---|" + "---|---|" * len(models))
    with tempfile.TemporaryDirectory() as tmp:
        paths = {m: _layout(m, Path(tmp) / m) if m.endswith("-size") else m for m in models}
        for method in args.methods.split(","):
            cells = []
            for m in models:
                run = subprocess.run([sys.executable, __file__, "--child", f"{paths[m]}|{method}", "--concept",
                                      args.concept, "--device", args.device, "--dtype", args.dtype, "--threads",
                                      str(args.threads)], capture_output=True, text=True)
                if run.returncode:
                    cells += ["failed: " + (run.stderr.strip().splitlines() or ["?"])[-1], ""]
                    continue
                r = json.loads(run.stdout.strip().splitlines()[-1])
                cells += [f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}"]
            print(f"| {method} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
