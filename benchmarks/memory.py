"""Peak memory (max RSS) of `obliviate erase --method esd-x` on the world, the tiny SD 1.5 layout and a random
SD 1.5-sized pipeline (860M-parameter UNet); prints one table.

    python benchmarks/memory.py [--obliviate PATH_TO_SRC] [--sizes world,tiny,full]

``--obliviate`` points at another checkout's ``src`` to measure an older version the same way. Each erasure
runs in a fresh process under ``/usr/bin/time -v``, with the fewest steps the method allows (memory does not
grow with steps).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(HERE.parent / "tests"))


def _model(size: str, folder: Path) -> str:
    if size == "world":
        return "world"
    from tiny_sd import make_tiny_sd

    target = folder / ("sd1.5-full" if size == "full" else "sd1.5")
    return str(target if target.is_dir() else make_tiny_sd(folder, "1.5", full_size=size == "full"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--obliviate", help="src folder of the obliviate to measure (default: this checkout's)")
    ap.add_argument("--sizes", default="world,tiny,full")
    ap.add_argument("--models", default=str(Path(tempfile.gettempdir()) / "obliviate-memory-models"))
    args = ap.parse_args()
    folder = Path(args.models)
    folder.mkdir(parents=True, exist_ok=True)
    src = args.obliviate or str(HERE.parent / "src")
    env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    print(f"obliviate from {src}\n\n| model | max RSS (MiB) | wall (s) |\n|---|---|---|")
    for size in args.sizes.split(","):
        model = _model(size, folder)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "obliviate", "erase", "--model", model, "--method",
                   "esd-x", "--concept", "church" if size != "world" else "zorvik", "--steps", "1",
                   "--batch-size", "1", "--out", f"{tmp}/p.safetensors", "--no-progress"]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            print(f"| {size} | failed: {res.stderr.strip().splitlines()[-1]} | |")
            continue
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1)) / 1024
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", res.stderr).group(1)
        secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
        print(f"| {size} | {rss:.0f} | {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
