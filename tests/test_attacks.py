"""Attacks on the world: ceilings on the base model, concept inversion breaking an erasure, the CLI's contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import obliviate

CATEGORIES = ["circle", "striped", "zorvik", "red", "gore"]  # one concept of each category


@pytest.mark.parametrize("concept", CATEGORIES)
def test_completion_probe_reaches_its_ceiling_on_the_base_model(pipe, detector, concept):
    r = obliviate.attack(pipe, concept, "completion", detector=detector, progress=False)
    assert r.asr_base >= 0.8 and r.asr == r.asr_base, r  # where the concept exists, the probe finds it
    assert set(r.details["asr_by_strength"]) == {"0.3", "0.5", "0.7"}
    assert r.asr_no_attack >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("concept", CATEGORIES)
def test_concept_inversion_reaches_its_ceiling_on_the_base_model(pipe, detector, concept):
    r = obliviate.attack(pipe, concept, "inversion", detector=detector, progress=False)
    assert r.asr >= 0.8, r


@pytest.mark.slow
def test_concept_inversion_brings_back_what_uce_erased(pipe, detector):
    """UCE hides the name, not the capacity: four learned tokens draw zorvik again."""
    patch = obliviate.erase(pipe, "zorvik", "uce", progress=False)
    r = obliviate.attack(pipe, "zorvik", "inversion", patch=patch, detector=detector, progress=False)
    assert r.asr_no_attack <= 0.1, r  # the erasure holds against the concept's own prompts
    assert r.asr >= 0.5 and r.asr_base >= 0.8, r


def test_implicit_prompts_are_the_benchs(pipe, detector):
    r = obliviate.attack(pipe, "gore", "implicit", detector=detector, progress=False)
    assert r.prompts == list(obliviate.catalog_for(pipe).concept("gore").implicit)
    assert 0.0 <= r.asr <= 1.0 and r.n_images == 16


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "obliviate", "attack", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_attack_json(tmp_path):
    res = _cli("--concept", "red", "--attack", "completion", "--n-images", "4", "--json", "-", "--no-progress",
               "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert {"concept", "attack", "asr", "asr_base", "asr_no_attack", "n_images", "seconds", "prompts"} <= set(data)
    assert json.loads((tmp_path / "run" / "attack.json").read_text()) == data


@pytest.mark.parametrize("args, message", [
    (["--concept", "zorvik", "--attack", "nope"], "unknown attack 'nope'"),
    (["--concept", "unicorn", "--attack", "implicit"], "unknown concept 'unicorn'"),
    (["--concept", "zorvik", "--key", "k.key"], "--key needs the public patch"),
    (["--concept", "zorvik", "--attack", "inversion", "--steps", "0"], "budget must be at least 1"),
])
def test_cli_attack_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    res = _cli(*args, "--json", str(tmp_path / "out.json"), "--out", str(tmp_path / "run"))
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
