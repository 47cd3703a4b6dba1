"""Bench specs (YAML loading and validation) and the real-model detectors (CLIP, NudeNet), on tiny inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from obliviate.bench import Bench, Concept, load_bench, world_bench
from obliviate.errors import ObliviateError

GOOD = """\
name: mine
detector: clip
images_per_concept: 4
templates:
  object: ["a photo of a {name}", "a {name}"]
phrasing: {style: "a painting by {name}"}
concepts:
  - {name: cat, category: object}
  - {name: dog, category: object, prompts: ["a dog running"]}
  - {name: Monet, category: style, synonyms: [Monet, Claude Monet], prompts: ["a painting by Monet"]}
  - {name: nudity, category: unsafe, detector: nudenet, prompts: ["a nude figure"]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    return path


def test_load_user_bench(tmp_path):
    bench = load_bench(_write(tmp_path, GOOD))
    assert (bench.name, bench.detector, bench.images_per_concept) == ("mine", "clip", 4)
    assert bench.categories == ("object", "style", "unsafe")
    assert bench.concept("cat").prompts == ("a photo of a cat", "a cat")
    assert bench.concept("cat").synonyms == ("cat",)
    assert bench.concept("dog").prompts == ("a dog running",)
    assert bench.concept("Monet").synonyms == ("Monet", "Claude Monet")
    assert bench.concept("nudity").detector == "nudenet" and bench.concept("cat").detector is None
    assert bench.detector_of(bench.concept("nudity")) == "nudenet"
    assert load_bench(str(tmp_path / "bench.yaml"), images_per_concept=2).images_per_concept == 2
    assert bench.phrasing == {"style": "a painting by {name}"} and load_bench("sd").phrasing == {}


@pytest.mark.parametrize("text, message", [
    ("name: x\ndetector: clip\n", "missing key(s) concepts"),
    ("detector: clip\nconcepts: [{name: a, category: object, prompts: [a]}]\n", "missing key(s) name"),
    ("name: x\ndetector: clip\nconcepts: [{category: object, prompts: [a]}]\n", "concepts[0]: missing key(s) name"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, prompts: [a]}]\n", "missing key(s) category"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: animal, prompts: [a]}]\n", "unknown category 'animal'"),
    ("name: x\ndetector: yolo\nconcepts: [{name: a, category: object, prompts: [a]}]\n", "unknown detector 'yolo'"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: object, prompts: [a], detector: x}]\n",
     "unknown detector 'x'"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: object, prompts: [a]}, "
     "{name: a, category: style, prompts: [b]}]\n", "duplicate concept name 'a'"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: object, prompts: []}]\n", "prompts must be a non-empty"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: object, prompts: ['']}]\n", "prompts[0] must be"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: object}]\n", "no prompts and no templates"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: object, prompts: a photo}]\n", "non-empty list"),
    ("name: x\ndetector: clip\nimages_per_concept: 0\nconcepts: [{name: a, category: object, prompts: [a]}]\n",
     "images_per_concept must be a positive integer"),
    ("name: x\ndetector: clip\nimages_per_concept: many\nconcepts: [{name: a, category: object, prompts: [a]}]\n",
     "images_per_concept must be a positive integer"),
    ("name: x\ndetector: clip\nconcepts: []\n", "concepts must be a non-empty list"),
    ("name: x\ndetector: clip\nconcepts: [just-a-string]\n", "concepts[0] must be a mapping"),
    ("name: x\ndetector: clip\nconcept: []\n", "unknown key(s) concept"),
    ("name: x\ndetector: clip\ntemplates: {object: [a photo]}\nconcepts: [{name: a, category: object}]\n",
     "no {name} placeholder"),
    ("name: x\ndetector: clip\ntemplates: {animal: ['{name}']}\nconcepts: [{name: a, category: object}]\n",
     "unknown category 'animal'"),
    ("name: x\ndetector: clip\nphrasing: {style: a photo}\nconcepts: [{name: a, category: object, prompts: [a]}]\n",
     "phrasing.style: 'a photo' has no {name} placeholder"),
    ("name: x\ndetector: clip\nphrasing: [a]\nconcepts: [{name: a, category: object, prompts: [a]}]\n",
     "phrasing must be a mapping"),
    ("name: 3\ndetector: clip\nconcepts: [{name: a, category: object, prompts: [a]}]\n", "name must be a non-empty"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("name: x\ndetector: clip\nconcepts: [{name: a, category: object, prompts: [a]\n", "invalid YAML at line"),
])
def test_malformed_spec_errors(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ObliviateError) as err:
        load_bench(path)
    msg = str(err.value)
    assert message in msg and str(path) in msg and "\n" not in msg


def test_missing_spec_file(tmp_path):
    with pytest.raises(ObliviateError, match="not found"):
        load_bench(tmp_path / "nope.yaml")
    with pytest.raises(ObliviateError, match="shipped benches: sd, world"):
        load_bench("nonexistent-bench")
    with pytest.raises(ObliviateError, match="positive integer"):
        load_bench("world", images_per_concept=0)


def test_world_yaml_matches_domain():
    from obliviate.world.domain import concepts

    bench = world_bench()
    assert bench.detector == "world" and bench.images_per_concept == 32
    assert [(c.name, c.category, c.synonyms, c.prompts) for c in bench.concepts] == \
        [(c.name, c.category, c.synonyms, c.prompts) for c in concepts()]
    assert all(b.implicit == c.implicit for b, c in zip(bench.concepts, concepts(), strict=True) if c.implicit)
    assert bench.categories == ("object", "style", "id", "color", "unsafe")
    assert world_bench(5).images_per_concept == 5


def test_sd_yaml_contents():
    bench = load_bench("sd")
    assert bench.detector == "clip"
    count = {cat: sum(c.category == cat for c in bench.concepts) for cat in bench.categories}
    assert count["object"] >= 10 and count["style"] >= 5 and count["id"] >= 5
    imagenette = {"tench", "English springer", "cassette player", "chain saw", "church", "French horn",
                  "garbage truck", "gas pump", "golf ball", "parachute"}
    assert imagenette <= {c.name for c in bench.concepts if c.category == "object"}
    nudity = bench.concept("nudity")
    assert nudity.category == "unsafe" and nudity.detector == "nudenet" and len(nudity.prompts) >= 4
    assert all(c.prompts and all(c.name in p for p in c.prompts) for c in bench.concepts if c.category != "unsafe")


def test_bench_categories_default_to_order_of_appearance():
    bench = Bench("b", [Concept("x", "style", ("x",)), Concept("y", "id", ("y",)),
                        Concept("z", "style", ("z",))])
    assert bench.categories == ("style", "id")


# ------------------------------------------------------------------------------------------------------ CLIP

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[Path, Bench]:
    """A randomly initialised 2-layer CLIP with a BPE tokenizer over the bench's words, saved as a local folder."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from obliviate.eval.detectors import NONE_PROMPTS
    from obliviate.world.tokenizer import build_tokenizer

    bench = Bench("tiny", [Concept("circle", "object", ("a photo of a circle", "a circle")),
                           Concept("square", "object", ("a photo of a square",)),
                           Concept("striped", "style", ("a striped drawing",)),
                           Concept("dotted", "style", ("a dotted drawing",))], detector="clip")
    texts = [p for c in bench.concepts for p in c.prompts] + [p for ps in NONE_PROMPTS.values() for p in ps]
    words = sorted({w for t in texts for w in t.replace(",", "").split()})
    folder = tmp_path_factory.mktemp("tiny_clip")
    tok = build_tokenizer(words, folder, max_length=16)
    ids = {"bos_token_id": tok.convert_tokens_to_ids("<|startoftext|>"),
           "eos_token_id": tok.convert_tokens_to_ids("<|endoftext|>")}
    ids["pad_token_id"] = ids["eos_token_id"]
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(text_config={**small, "vocab_size": len(tok), "max_position_embeddings": 16, **ids},
                        vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    return folder, bench


def test_clip_detector(tiny_clip):
    from obliviate.eval.detectors import ClipDetector, make_detector
    from obliviate.world.domain import sample_dataset

    folder, bench = tiny_clip
    images = sample_dataset(6, 0)[1]
    det = ClipDetector(folder, bench.concepts)
    feats = det.features(images)
    assert feats.shape == (6, 16) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    hits = det.hits(images, bench.concept("circle"))
    assert hits.dtype == bool and hits.shape == (6,)
    assert np.array_equal(hits, det.hits(images, bench.concept("circle")))
    pred = det.predict(np.concatenate([images, np.zeros((2, 32, 32, 3), np.uint8)]))
    assert set(pred) == {"object", "style"} and set(pred["style"]) <= {"none", "striped", "dotted"}
    assert np.array_equal(pred["object"][:6] == "circle", hits)
    big = np.repeat(np.repeat(images, 2, axis=1), 3, axis=2)  # non-square, larger: resized and centre-cropped
    assert det.features(big).shape == (6, 16)
    assert type(make_detector("clip", bench, str(folder))).__name__ == "ClipDetector"
    with pytest.raises(ObliviateError, match="not built with concept"):
        det.hits(images, Concept("heart", "object", ("a heart",)))


def test_clip_detector_errors(tmp_path):
    from obliviate.eval.detectors import ClipDetector, make_detector

    concepts = [Concept("a", "object", ("a",))]
    with pytest.raises(ObliviateError, match="not found"):
        ClipDetector(tmp_path / "missing", concepts)
    with pytest.raises(ObliviateError, match="not a CLIP model folder"):
        ClipDetector(tmp_path, concepts)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ObliviateError, match="not a CLIP model"):
        ClipDetector(tmp_path, concepts)
    with pytest.raises(ObliviateError, match="needs a CLIP detector"):
        make_detector("clip", Bench("b", concepts, detector="clip"))


# --------------------------------------------------------------------------------------------------- NudeNet

def test_nudenet_benign_world_images():
    pytest.importorskip("nudenet")
    from obliviate.eval.detectors import NudeNetDetector
    from obliviate.world.domain import sample_dataset

    images = np.repeat(np.repeat(sample_dataset(8, 0)[1], 4, axis=1), 4, axis=2)  # 128x128, closer to real use
    det = NudeNetDetector(threshold=0.6)
    scores = det.scores(images)
    assert scores.shape == (8,) and scores.dtype == np.float32
    hits = det.hits(images, Concept("nudity", "unsafe", ("x",), detector="nudenet"))
    assert hits.dtype == bool and not hits.any()


def test_mixed_bench_dispatches_per_concept(tiny_clip):
    pytest.importorskip("nudenet")
    from obliviate.eval.detectors import ClipDetector, NudeNetDetector, PerConceptDetector, make_detector

    folder, bench = tiny_clip
    nudity = Concept("nudity", "unsafe", ("a nude figure",), detector="nudenet")
    mixed = Bench("mixed", [*bench.concepts, nudity], detector="clip")
    det = make_detector("clip", mixed, folder)
    assert isinstance(det, PerConceptDetector)
    assert isinstance(det.detector_for(nudity), NudeNetDetector)
    assert isinstance(det.detector_for(bench.concept("circle")), ClipDetector)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    assert det.hits(images, nudity).shape == (2,) and det.features(images).shape == (2, 16)
