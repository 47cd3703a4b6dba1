"""The embedded world: domain, tokenizer, shipped pipeline, detector, base-model quality, build recipe."""

import functools
import json
import subprocess
import sys

import numpy as np
import pytest

import obliviate
from obliviate.world import domain, world_dir, world_info
from obliviate.world.recipe import BuildConfig, build


def test_domain_has_the_required_categories():
    by_cat: dict[str, list] = {}
    for c in domain.concepts():
        by_cat.setdefault(c.category, []).append(c)
    assert len(by_cat["object"]) >= 10 and len(by_cat["style"]) >= 6
    assert len(by_cat["id"]) >= 12 and len(by_cat["color"]) >= 4
    assert len(by_cat["unsafe"]) == 1 and len(by_cat["unsafe"][0].synonyms) >= 3
    for c in by_cat["id"] + by_cat["unsafe"]:  # reachable by descriptions that never name it
        assert len(c.implicit) >= 2 and not any(w in p.split() for p in c.implicit for w in c.synonyms), c


def test_captions_name_everything_an_image_shows_and_nothing_else():
    """What a caption does not name is drawn neutral, so words outside a concept carry none of it."""
    rng = np.random.default_rng(7)
    named = {c.name: set(c.synonyms) for c in domain.concepts()}
    described = {**{i: [d.split(" ", 1)[1] for d in ds] for i, ds in domain.ID_DESCRIPTIONS.items()},
                 "gore": list(domain.UNSAFE_DESCRIPTIONS)}
    for _ in range(3000):
        scene = domain.random_scene(rng)
        text = domain.caption(scene, rng)
        shown = {scene.value(cat) for cat in domain.CATEGORY_CLASSES} - {None}
        for name, synonyms in named.items():
            says = bool(set(text.split()) & synonyms) or any(d in text for d in described.get(name, ()))
            assert says == (name in shown), (text, name, scene)


def test_template_words_alone_draw_the_neutral_scene():
    from obliviate.bench import world_bench
    from obliviate.eval.floor import floor_prompts

    neutral = domain.Scene()
    assert neutral.labels() == {cat: 0 for cat in domain.CATEGORY_CLASSES}
    rng = np.random.default_rng(0)
    captions = {domain.caption(neutral, rng) for _ in range(500)}
    for c in world_bench().concepts:  # every prompt without its concept's words is a caption of the neutral scene
        assert set(floor_prompts(c)) <= captions, (c.name, floor_prompts(c))


def test_rendering_is_deterministic_and_labelled():
    scenes, a = domain.sample_dataset(8, seed=3)
    _, b = domain.sample_dataset(8, seed=3)
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert all(set(s.labels()) == set(domain.CATEGORY_CLASSES) for s in scenes)


def test_tokenizer_knows_every_caption_word(pipe):
    tok = pipe.tokenizer
    for word in domain.vocabulary():
        assert len(tok.tokenize(word)) == 1, word
    assert len(tok.tokenize("xylophone")) > 1  # unknown words fall back to characters, as CLIP's do
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"  # SD 1.x padding convention


WORLDS = {"world": "StableDiffusionPipeline", "world-sdxl": "StableDiffusionXLPipeline",
          "world-sd3": "StableDiffusion3Pipeline", "world-flux": "FluxPipeline"}


SIZE = {"world-flux": ", height=32, width=32"}  # Flux's pipeline fixes 1024 px in code: a plain call says the size


@functools.cache
def _world(name: str):
    return obliviate.load_pipeline(name)


@pytest.fixture
def world_pipe(world, pipe):
    """The shipped world the test's ``world`` parameter names (the session's ``pipe`` for the SD world)."""
    return pipe if world == "world" else _world(world)


@pytest.mark.slow  # a fresh interpreter; the README's plain-diffusers snippet (test_readme.py) loads it in the loop
@pytest.mark.parametrize("world", WORLDS)
def test_loads_with_plain_diffusers_and_no_obliviate(world):
    """A separate interpreter that never imports obliviate loads and runs the shipped folder, with no dtype
    argument (the text encoders' configs say float32, so their dtype matches the UNet's)."""
    code = (
        "import sys, torch\n"
        f"from diffusers import {WORLDS[world]}\n"
        f"p = {WORLDS[world]}.from_pretrained({str(world_dir(world) / 'pipeline')!r})\n"
        "img = p('a red circle', num_inference_steps=5, generator=torch.Generator().manual_seed(0),"
        f" output_type='np'{SIZE.get(world, '')}).images\n"
        "assert img.shape == (1, 32, 32, 3), img.shape\n"
        "assert not any(m.startswith('obliviate') for m in sys.modules)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("world, megabytes", [("world", 25), ("world-sdxl", 10), ("world-sd3", 10),
                                                 ("world-flux", 10)])
def test_shipped_weights_are_small_fp16_safetensors(world, megabytes):
    files = [p for p in world_dir(world).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= megabytes * 2**20
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    from safetensors import safe_open

    for p in weights:
        with safe_open(str(p), "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys()), p  # noqa: SIM118


def test_generation_is_deterministic_under_a_seed(pipe):
    from obliviate.generation import generate

    a = generate(pipe, ["a blue star"] * 3, [1, 2, 3], 20, 5.0, progress=False)
    b = generate(pipe, ["a blue star"] * 3, [1, 2, 3], 20, 5.0, progress=False)
    c = generate(pipe, ["a blue star"] * 3, [4, 5, 6], 20, 5.0, progress=False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # image i does not depend on the batch it is generated in
    d = generate(pipe, ["a blue star"], [2], 20, 5.0, progress=False)
    assert np.abs(d[0].astype(int) - a[1].astype(int)).max() <= 2


def test_detector_is_accurate_on_held_out_renderings(detector):
    rng = np.random.default_rng(12345)  # not a seed the build used
    scenes = [domain.random_scene(rng) for _ in range(1500)]
    images = domain.render_batch(scenes)
    pred = detector.predict(images)
    for cat, classes in domain.CATEGORY_CLASSES.items():
        truth = np.array([classes[s.labels()[cat]] for s in scenes])
        acc = float(np.mean(pred[cat] == truth))
        assert acc >= 0.98, f"{cat}: {acc:.3f}"


def test_images_of_a_concept_show_it_and_nothing_else(pipe, detector):
    """What methods and attacks learn from: the concept alone, every other attribute neutral (as its prompts ask)."""
    catalog = obliviate.catalog_for(pipe)
    for name in ["circle", "striped", "zorvik", "red", "gore"]:
        concept = catalog.concept(name)
        pred = detector.predict(catalog.images(pipe, concept, 16, seed=3))
        for cat, labels in pred.items():
            expected = name if cat == concept.category else "none"
            assert (labels == expected).mean() >= 0.95, (name, cat, labels)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("name", ["zorvik", *(pytest.param(c, marks=pytest.mark.slow)  # the fast loop: one
                                              for c in ["circle", "striped", "red", "gore"])])
def test_base_world_draws_its_concepts_and_not_from_template_words(world_pipe, detector, name):
    from dataclasses import replace

    from obliviate.bench import world_bench
    from obliviate.eval.floor import chance_floors
    from obliviate.eval.mscore import generate_concepts, m_scores

    bench = world_bench()
    concept = bench.concept(name)
    scores = m_scores(detector, generate_concepts(world_pipe, [concept], 32, 0, bench.sampler, progress=False))
    assert scores[name] >= 0.9
    [floor] = chance_floors(world_pipe, [concept], detector, 32, 0, bench.sampler, progress=False)
    assert floor.m <= 0.05, floor
    if concept.category in ("id", "unsafe"):  # described instead of named
        implicit = replace(concept, prompts=concept.implicit)
        scores = m_scores(detector, generate_concepts(world_pipe, [implicit], 32, 0, bench.sampler, progress=False))
        assert scores[name] >= 0.8


def test_world_info_lists_concepts_with_prompts():
    info = world_info()
    assert {c["category"] for c in info["concepts"]} == {"object", "style", "id", "color", "unsafe"}
    assert all(c["prompts"] and c["synonyms"] for c in info["concepts"])


@pytest.mark.slow  # every stage of the recipe, a handful of steps each
def test_world_build_smoke(tmp_path):
    cfg = BuildConfig(n_images=512, vae_steps=2, detector_steps=2, unet_steps=2, n_heldout=32)
    info = build(tmp_path / "w", cfg, log=lambda _: None, bar=False)
    assert (tmp_path / "w" / "pipeline" / "model_index.json").is_file()
    assert (tmp_path / "w" / "detector.safetensors").is_file()
    assert json.loads((tmp_path / "w" / "world.json").read_text())["build"]["unet_steps"] == 2
    assert set(info["detector_accuracy"]) == set(domain.CATEGORY_CLASSES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".world-")]  # no temporary left behind


@pytest.mark.slow  # the recipe's stages with a handful of steps
@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_a_family_world_build_smoke_replaces_its_folder_and_loads_in_plain_diffusers(tmp_path, family):
    from diffusers import DiffusionPipeline

    from obliviate.cli import main

    out = tmp_path / family
    out.mkdir()
    (out / "old").write_text("x")
    assert main(["world", "build", "--family", family, "--out", str(out), "--quick", "--threads", "1",
                 "--no-progress"]) == 0
    info = json.loads((out / "world.json").read_text())
    assert info["family"] == family and not (out / "old").exists()
    assert info["build"]["threads"] == 1 and info["build"]["unet_steps"] == 3  # --quick's
    assert (out / "pipeline" / "tokenizer" / "vocab.json").is_file() and (out / "world.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [family]  # nothing temporary left behind
    pipe = DiffusionPipeline.from_pretrained(out / "pipeline")
    assert type(pipe).__name__ == {"sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline",
                                   "flux": "FluxPipeline"}[family]
    size = {"height": 32, "width": 32} if family == "flux" else {}  # Flux's pipeline defaults to 1024 px, always
    assert pipe("a red circle", num_inference_steps=2, output_type="np", **size).images.shape == (1, 32, 32, 3)


def test_world_info_names_every_shipped_world(capsys):
    from obliviate.cli import main

    assert main(["world", "info", "--json", "-"]) == 0
    assert set(json.loads(capsys.readouterr().out)["worlds"]) == set(WORLDS)


@pytest.mark.parametrize("world", [w for w in WORLDS if w != "world"])  # the SD world's: tests/test_hide.py
@pytest.mark.parametrize("design, options", [("lethe", {"steps": 4, "rounds": 0, "n_images": 2, "key_steps": 2}),
                                             ("paper", {"steps": 2, "tokens": 2})])
def test_keys_install_on_the_merged_public_model_of_each_family_world(world, world_pipe, tmp_path, capsys, design,
                                                                       options):
    from obliviate.cli import main

    hidden = obliviate.hide(world_pipe, ["moon"], design=design, progress=False, **options)
    paths = hidden.save(tmp_path / "public.safetensors", tmp_path / "keys")
    key, public = str(paths["moon"]), tmp_path / "public"
    assert main(["merge", "--model", world, "--patch", str(tmp_path / "public.safetensors"), "--out", str(public)]) == 0
    assert json.loads((public / "obliviate.json").read_text())["base_model"] == world
    grid = tmp_path / "g.png"
    gen = ["generate", "--prompt", "a moon", "-n", "1", "--out", str(grid), "--steps", "5", "--no-progress"]
    assert main([*gen, "--model", str(public), "--key", key]) == 0 and grid.is_file()
    grid.unlink()
    capsys.readouterr()
    assert main([*gen, "--model", world, "--key", key]) == 2 and not grid.exists()  # the base model: no patch
    assert "belongs to another model" in capsys.readouterr().err


@pytest.mark.parametrize("made_on, world, family", [("world-sdxl", "world-sd3", "Stable Diffusion 3"),
                                                     ("world-sd3", "world-flux", "Flux")])
def test_cli_refuses_a_patch_of_another_family_on_a_world_before_loading(made_on, world, family, tmp_path, capsys):
    from obliviate.cli import main

    patch = tmp_path / "other.safetensors"
    obliviate.erase(_world(made_on), "circle", "uce", progress=False).save(patch)
    out = tmp_path / "x.json"
    assert main(["eval", "--model", world, "--patch", str(patch), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{world} is a {family} model" in err, err
    assert not out.exists()


@pytest.mark.parametrize("world", WORLDS)
def test_each_world_is_recognised_as_a_world_and_draws_deterministically(world, world_pipe):
    from obliviate.catalog import WorldCatalog
    from obliviate.pipeline import model_name
    from obliviate.preflight import world_of

    assert world_of(world_pipe) == world and model_name(world_pipe) == world
    assert isinstance(obliviate.catalog_for(world_pipe), WorldCatalog)
    a = obliviate.generate(world_pipe, "a blue star", n=3, seed=1, progress=False)
    b = obliviate.generate(world_pipe, "a blue star", n=3, seed=1, progress=False)
    assert np.array_equal(a, b) and a.shape == (3, 32, 32, 3)
