"""The public API as a user meets it: the README's examples run verbatim, bad devices, dtypes and pipelines are
refused in one line, and a patch made through the API fits the pipeline it was made on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import obliviate
from obliviate.errors import ObliviateError

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    """Every python block of the README but those a marker hands to their own test (tests/test_readme.py)."""
    blocks = re.findall(r"(<!-- test:[^\n]*-->\n)?```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return [code for marker, code in blocks if not marker]


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 1  # the API tour; the plain-diffusers block runs in test_readme.py


@pytest.mark.slow  # a hide with 60 steps and a key of 100, in a fresh interpreter
@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_example_runs_verbatim(index, tmp_path):
    code = _python_blocks()[index]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OBLIVIATE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]


def test_api_exports():
    for name in ("load_pipeline", "erase", "hide", "generate", "evaluate", "Patch", "Key", "EvalResult"):
        assert callable(getattr(obliviate, name)), name
    with pytest.raises(AttributeError):
        obliviate.no_such_thing  # noqa: B018


def test_a_patch_made_on_a_pipeline_fits_it(pipe, tmp_path):
    """The fingerprint is taken before the method touches anything (it used to be taken after training)."""
    patch = obliviate.erase(pipe, "zorvik", "fmn", steps=3, progress=False)
    loaded = obliviate.Patch.load(patch.save(tmp_path / "p.safetensors"))
    loaded.apply(pipe).remove()
    assert loaded.metadata["base_model"] == obliviate.Fingerprint.from_dict(loaded.metadata["base_fingerprint"]).id


def test_unknown_method_and_option_are_one_line_errors(pipe):
    with pytest.raises(ObliviateError, match="unknown method 'nope'"):
        obliviate.erase(pipe, "zorvik", "nope")
    with pytest.raises(ObliviateError, match="does not take 'preserve_weight'"):
        obliviate.erase(pipe, "zorvik", "uce", preserve_weight=1.0)
    with pytest.raises(ObliviateError, match="unknown concept 'unicorn'"):
        obliviate.erase(pipe, "unicorn", "uce")


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "cuda"} if not __import__("torch").cuda.is_available() else {"device": "cuda:99"}, "not available"),
    ({"device": "tpu"}, "unknown device|unsupported device"),
    ({"dtype": "float8"}, "unknown dtype"),
])
def test_bad_device_or_dtype_is_refused_before_loading(kwargs, message):
    with pytest.raises(ObliviateError, match=message):
        obliviate.load_pipeline("world", **kwargs)


SUPPORTED = r"StableDiffusionPipeline \(Stable Diffusion 1.x / 2.x\); StableDiffusionXLPipeline \(Stable Diffusion XL\)"


@pytest.mark.parametrize("cls", ["StableDiffusionXLImg2ImgPipeline", "KandinskyPipeline"])
def test_unsupported_pipeline_class_is_refused(tmp_path, cls):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(f'{{"_class_name": "{cls}"}}')
    with pytest.raises(ObliviateError, match=f"{cls}; obliviate supports {SUPPORTED}"):
        obliviate.load_pipeline(str(folder))


def test_a_users_pipeline_of_no_family_is_refused_naming_the_families():
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = obliviate.load_pipeline("world")
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    with pytest.raises(ObliviateError, match=f"StableDiffusionImg2ImgPipeline is not a pipeline obliviate supports: "
                                             f"{SUPPORTED}"):
        obliviate.erase(img2img, "zorvik", "uce")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "obliviate", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("command, args", [
    ("erase", ["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--device", "cuda:99"]),
    ("generate", ["--device", "quantum"]), ("erase", ["--device", "cuda:x"]),
    ("generate", ["--dtype", "float8"]), ("erase", ["--dtype", "float8"]),
])
def test_cli_bad_device_or_dtype_is_one_line_and_writes_nothing(tmp_path, args, command):
    out = tmp_path / ("x.png" if command == "generate" else "x.safetensors")
    extra = ["--prompt", "a red circle"] if command == "generate" else ["--concept", "zorvik", "--method", "uce"]
    res = _cli(command, *extra, *args, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_unsupported_pipeline_is_one_line_and_writes_nothing(tmp_path):
    folder = tmp_path / "sdxl"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    out = tmp_path / "out"
    out.mkdir()
    res = _cli("erase", "--model", str(folder), "--concept", "cat", "--method", "uce", "--out",
               str(out / "p.safetensors"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "StableDiffusionXLPipeline" in res.stderr and list(out.iterdir()) == []
