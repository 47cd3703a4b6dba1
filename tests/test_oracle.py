"""Oracle worlds: the world retrained without some concepts, built, found, checked and compared with."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import obliviate
from obliviate.errors import ObliviateError
from obliviate.files import oracle_without
from obliviate.preflight import is_world_based
from obliviate.world import domain
from obliviate.world.oracle import SHIPPED, check_oracle, check_without, find_oracle, oracle_name, shows_any


@pytest.fixture(scope="session")
def tiny_oracle(tmp_path_factory):
    """An oracle without circle trained for three steps: the plumbing, not the figures."""
    from obliviate.world.oracle import build_oracle
    from obliviate.world.recipe import BuildConfig

    out = tmp_path_factory.mktemp("oracles") / "circle"
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    build_oracle(out, ["circle"], BuildConfig(n_images=256, unet_steps=3, threads=threads + 1), log=lambda _: None,
                 bar=False)
    _AFTER_BUILD.update(threads=(threads, torch.get_num_threads()),
                        rng=torch.equal(state, torch.random.get_rng_state()))
    return out


_AFTER_BUILD: dict = {}


def test_a_build_gives_the_caller_back_its_threads_and_random_state(tiny_oracle):
    before, after = _AFTER_BUILD["threads"]
    assert after == before and _AFTER_BUILD["rng"]


@pytest.mark.parametrize(("names", "message"), [
    (["unicorn"], "unknown world concept 'unicorn'"),
    (["circle", "circle"], "names a concept twice"),
    (["red", "green", "blue", "yellow"], "every color concept"),
    ([], "is empty"),
])
def test_without_refuses_what_is_no_oracle(names, message):
    with pytest.raises(ObliviateError, match=message):
        check_without(names)


def test_without_is_sorted_and_gore_alone_is_fine():
    assert check_without(["zorvik", "striped"]) == ["striped", "zorvik"] == sorted(["zorvik", "striped"])
    assert check_without(["gore"]) == ["gore"] and oracle_name(["zorvik", "striped"]) == "striped+zorvik"


def test_the_scenes_left_out_are_exactly_those_that_show_the_concepts():
    rng = np.random.default_rng(0)
    scenes = [domain.random_scene(rng) for _ in range(3000)]
    left = [s for s in scenes if shows_any(s, ["zorvik", "striped"])]
    assert left and all(s.ident == "zorvik" or s.style == "striped" for s in left)
    assert not any(s.ident == "zorvik" or s.style == "striped" for s in scenes if s not in left)


def test_a_tiny_oracle_is_a_world_based_diffusers_folder_that_names_what_it_never_saw(tiny_oracle):
    assert oracle_without(tiny_oracle) == ["circle"]
    record = json.loads((tiny_oracle / "obliviate.json").read_text())
    assert record["base_model"] == "world" and record["oracle"]["scenes"]["left_out"] > 0
    assert is_world_based(str(tiny_oracle))
    from obliviate.world import world_dir

    for part in ("tokenizer", "vae"):  # the world's, byte for byte: the word exists, the latents are the same
        for f in (world_dir() / "pipeline" / part).iterdir():
            assert (tiny_oracle / part / f.name).read_bytes() == f.read_bytes(), f
    pipe = obliviate.load_pipeline(str(tiny_oracle))
    assert is_world_based(pipe) and obliviate.Fingerprint  # loads as a plain pipeline, judged the world's
    assert check_oracle(tiny_oracle, ["circle"]) == tiny_oracle
    with pytest.raises(ObliviateError, match="oracle without circle, not without zorvik"):
        check_oracle(tiny_oracle, ["zorvik"])


def test_an_oracle_refuses_a_patch_made_on_the_world(tiny_oracle, tmp_path):
    world = obliviate.load_pipeline("world")
    patch = obliviate.erase(world, "circle", "uce", progress=False)
    with pytest.raises(ObliviateError, match="made for"):
        patch.apply(obliviate.load_pipeline(str(tiny_oracle)))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obliviate", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args_message", [
    (["world", "build", "--without", "unicorn", "--out", "{dir}/o"], "unknown world concept 'unicorn'"),
    (["world", "build", "--without", "circle,square,triangle,star,cross,heart,diamond,moon,arrow,house",
      "--out", "{dir}/o"], "every object concept"),
    (["eval", "--oracle", "{oracle}", "--model", "{dir}"], "model must be the world"),
    (["attack", "--concept", "zorvik", "--oracle", "{oracle}"], "oracle without circle, not without zorvik"),
    (["eval", "--oracle"], "which oracle?"),
    (["eval", "--oracle", "{dir}"], "is no oracle world"),
])
def test_bad_oracle_requests_fail_in_one_line_before_any_work(args_message, tiny_oracle, tmp_path):
    args, message = args_message
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    r = _cli(*[a.format(dir=tmp_path, oracle=tiny_oracle) for a in args])
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


def test_the_oracle_stands_beside_every_figure_of_an_evaluation(tiny_oracle, detector):
    world = obliviate.load_pipeline("world")
    patch = obliviate.erase(world, "circle", "uce", progress=False)
    r = obliviate.evaluate(world, patch=patch, oracle=tiny_oracle, concepts=["circle", "square"], images_per_concept=2,
                           detector=detector, progress=False, cache=False).to_dict()
    oracle = r["oracle"]
    assert oracle["targets"] == ["circle"] and oracle["efficacy"] is not None and oracle["preservation"] is not None
    assert [c["name"] for c in oracle["concepts"]] == ["circle", "square"]
    assert all(c["m_base"] == b["m_base"] for c, b in zip(oracle["concepts"], r["concepts"], strict=True))
    from obliviate.eval.report import render_markdown
    from obliviate.eval.run import format_table

    assert "M oracle" in format_table(r) and "the world retrained without circle" in format_table(r)
    assert "## Beside the oracle" in render_markdown(r)


@pytest.mark.skipif(not (SHIPPED / "circle").is_dir(), reason="the shipped oracles are built by benchmarks/oracles.py")
def test_the_shipped_circle_oracle_cannot_draw_circles_and_draws_the_rest(detector):
    world = obliviate.load_pipeline("world")
    r = obliviate.evaluate(world, oracle=find_oracle(["circle"]), concepts=["circle", "square", "striped", "red"],
                           images_per_concept=16, detector=detector, progress=False).to_dict()["oracle"]
    assert r["efficacy"] >= 0.9 and r["preservation"] >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("form", ["lora", "cross-attention"])
def test_relearning_brings_back_what_uce_erased_and_says_how_fast(form, detector):
    world = obliviate.load_pipeline("world")
    patch = obliviate.erase(world, "circle", "uce", progress=False)
    r = obliviate.attack(world, "circle", "relearn", patch=patch, detector=detector, n_images=8, form=form,
                         steps=50, check_every=25, progress=False)
    assert r.asr_no_attack <= 0.25 and r.asr >= 0.9, r.summary()
    assert r.details["steps_to_reach"] is not None and r.details["base_steps_to_reach"] == 25
    assert "reached 0.9 after" in r.summary()


def test_relearning_attacks_the_public_model_only():
    from obliviate.attacks import with_keys

    assert with_keys(["inversion", "relearn", "memory"], "all", ["a key"]) == ["inversion"]
    with pytest.raises(ObliviateError, match="attack the public model"):
        with_keys(["relearn"], "relearn", ["a key"])


@pytest.mark.skipif(not (SHIPPED / "circle").is_dir(), reason="the shipped oracles are built by benchmarks/oracles.py")
def test_ring_a_bell_finds_circle_in_the_world_and_not_in_its_oracle(detector):
    r = obliviate.attack(obliviate.load_pipeline("world"), "circle", "ringabell", oracle=True, detector=detector,
                         n_images=16, progress=False)
    assert r.asr >= 0.9 and r.asr_oracle <= 0.1, r.summary()
