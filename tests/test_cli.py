"""The command line: help everywhere, outputs, and bad input (one line, non-zero exit, no file)."""

import json
import os
import subprocess
import sys

import pytest

from obliviate.cli import build_parser, main

SUBCOMMANDS = [["world"], ["world", "build"], ["world", "info"], ["generate"], ["eval"], ["floor"], ["sign"],
               ["verify"]]


@pytest.mark.parametrize("cmd", [[]] + SUBCOMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_world_info_json(capsys):
    assert main(["world", "info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert os.path.isfile(os.path.join(data["path"], "model_index.json"))
    assert {"name", "category", "synonyms", "prompts"} <= set(data["concepts"][0])


def test_generate_writes_a_grid(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["generate", "--prompt", "a green heart", "-n", "4", "--seed", "0", "--out", str(out)]) == 0
    from PIL import Image

    img = Image.open(out)
    assert img.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "obliviate", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("args", [
    ["--model", "no-such-model", "--prompt", "a red circle"],
    ["--model", "/nonexistent/folder", "--prompt", "a red circle"],
    ["--prompt", "   "],
    ["--prompt", "a red circle", "-n", "0"],
])
def test_generate_bad_input_is_one_line_and_no_file(tmp_path, args):
    out = tmp_path / "grid.png"
    res = _run("generate", *args, "--out", str(out))
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert len([line for line in res.stderr.splitlines() if "error" in line]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_generate_unwritable_out_fails_cleanly(tmp_path):
    res = _run("generate", "--prompt", "a red circle", "--out", str(tmp_path / "missing" / "grid.png"))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "does not exist" in res.stderr


def test_eval_unknown_concept_fails_cleanly(tmp_path):
    res = _run("eval", "--concepts", "unicorn", "--json", str(tmp_path / "e.json"))
    assert res.returncode != 0 and "Traceback" not in res.stderr and "unicorn" in res.stderr
    assert not (tmp_path / "e.json").exists()


def test_floor_prints_each_concepts_floor_as_json(capsys):
    assert main(["floor", "--concepts", "circle,zorvik", "--images-per-concept", "4", "--json", "-",
                 "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [f["concept"] for f in data["floors"]] == ["circle", "zorvik"]
    assert data["floors"][0]["prompts"][0] == "a photo of a" and data["floors"][0]["n_images"] == 4
    assert all(0 <= f["interval"][0] <= f["m"] <= f["interval"][1] <= 1 for f in data["floors"])


def test_floor_unknown_concept_fails_cleanly(tmp_path):
    res = _run("floor", "--concepts", "unicorn", "--json", str(tmp_path / "f.json"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "unicorn" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "f.json").exists()
