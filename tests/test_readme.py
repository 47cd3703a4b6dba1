"""README code runs as printed: the plain-diffusers snippet, extracted verbatim and run in a fresh interpreter."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- test: plain-diffusers"


def marked_block(text: str, marker: str) -> tuple[str, str]:
    """(the prose before ``marker`` back to the previous blank line, the fenced python block right after it)."""
    before, found, after = text.partition(marker)
    assert found, f"README.md has no {marker!r} marker"
    block = re.match(r"[^\n]*-->\n```python\n(.*?)\n```\n", after, flags=re.S)
    assert block, f"no ```python block right after {marker!r}"
    return before.rstrip("\n").rsplit("\n\n", 1)[-1], block.group(1) + "\n"


def test_plain_diffusers_snippet_runs_with_the_worlds_sampler(tmp_path, monkeypatch, pipe, detector):
    from obliviate.bench import world_bench
    from obliviate.cli import main
    from obliviate.world import world_dir

    prose, code = marked_block(README.read_text(encoding="utf-8"), MARKER)
    # The sampler the snippet uses is the world's: its own scheduler, and the steps and guidance of its bench.
    sampler = world_bench().sampler
    assert f'"num_inference_steps": {sampler.steps}' in code and f'"guidance_scale": {sampler.guidance}' in code
    scheduler = (world_dir() / "pipeline" / "scheduler" / "scheduler_config.json").read_text()
    assert '"DDIMScheduler"' in scheduler and "set_timesteps" not in code and "scheduler =" not in code
    # The patch it loads, made with the command the prose above it gives (in-process: the fastest way).
    command = re.search(r"`(obliviate erase [^`]+)`", prose).group(1)
    monkeypatch.chdir(tmp_path)
    assert main([*shlex.split(command)[1:], "--no-progress"]) == 0
    assert (tmp_path / "uce-zorvik.safetensors").is_file()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OBLIVIATE_TEST_THREADS", "2")}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    image = np.array(Image.open(tmp_path / "zorvik-erased.png").convert("RGB"))
    assert image.shape == (32, 32, 3) and image.std() > 0
    # What it claims: zorvik erased. The same prompt and seed without the patch draw zorvik; with it, no zorvik.
    import torch

    zorvik = world_bench().concept("zorvik")
    plain = pipe("a photo of zorvik", generator=torch.Generator().manual_seed(0), num_inference_steps=sampler.steps,
                 guidance_scale=sampler.guidance, output_type="np").images
    assert detector.hits(np.round(plain * 255).astype(np.uint8), zorvik)[0]
    assert not detector.hits(image[None], zorvik)[0]


def test_readme_lists_every_method_in_the_api_and_the_cli():
    import obliviate

    text = README.read_text(encoding="utf-8")
    api = re.search(r"Methods: (.*?)\.\n", text, flags=re.S).group(1)
    cli = re.search(r"obliviate erase --model world --method (\S+)", text).group(1)
    for name in obliviate.METHODS:
        assert f"`{name}`" in api, f"README's API list of methods lacks {name}"
        assert name in cli.split("|"), f"README's `obliviate erase` line lacks {name}"
