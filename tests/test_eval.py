"""Evaluation: M-Score on the base world, a damaged model, edit metrics, intervals, caching, JSON schema."""

import json

import numpy as np
import pytest

import obliviate
from obliviate.bench import world_bench
from obliviate.eval import run as eval_run
from obliviate.eval.metrics import (
    efficacy,
    frechet_distance,
    harmonic_mean,
    mean_feature_distance,
    preservation,
    wilson_interval,
    worst_preserved,
)
from obliviate.fingerprint import fingerprint
from obliviate.patch import Patch

TOP_KEYS = {"model", "patch", "seed", "bench", "sampler", "concepts", "categories", "targets", "efficacy",
            "preservation", "neighbour_preservation", "worst_preserved", "h", "drift", "seconds"}


def _zero_values_patch(pipe, concepts):
    """The 'damaged model': every attn2 value projection zeroed, so the text no longer steers anything."""
    tensors = {f"delta.unet.{n}": -p.detach().clone() for n, p in pipe.unet.named_parameters()
               if "attn2.to_v.weight" in n}
    return Patch(tensors, {"method": "zero-attn2-values", "concepts": concepts,
                           "base_fingerprint": fingerprint(pipe).to_dict()})


def test_metric_formulas():
    assert efficacy(0.8, 0.2) == pytest.approx(0.75)
    assert efficacy(0.8, 0.9) == 0.0 and efficacy(0.0, 0.5) is None
    assert preservation([(1.0, 0.5), (0.5, 1.0), (0.0, 0.3)]) == pytest.approx(0.75)
    assert harmonic_mean(1.0, 0.5) == pytest.approx(2 / 3) and harmonic_mean(None, 1.0) is None
    # the mean of 31 near-perfect concepts and one half gone is 0.98: the worst one says which and how much
    kept = [(f"c{i}", 1.0, 1.0) for i in range(31)] + [("circle", 0.9, 0.45), ("never", 0.0, 0.5)]
    assert worst_preserved(kept) == {"concept": "circle", "preservation": pytest.approx(0.5)}
    assert worst_preserved([("never", 0.0, 0.5)]) is None
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(72.0, rel=1e-3)  # |shift|^2 = 8 * 9
    assert mean_feature_distance(a, a + np.eye(8)[0]) == pytest.approx(1.0)
    lo, hi = wilson_interval(1.0, 16)
    assert hi == 1.0 and 0.79 < lo < 0.81  # 16 of 16 hits: at least ~0.8 with 95% confidence
    lo, hi = wilson_interval(0.5, 64)
    assert 0.37 < lo < 0.39 and 0.61 < hi < 0.63


@pytest.mark.slow
def test_base_world_scores_high_on_every_concept(pipe, detector):
    result = obliviate.evaluate(pipe, images_per_concept=16, detector=detector, progress=False)
    data = result.to_dict()
    assert set(data) >= TOP_KEYS and "inversion" not in data
    assert result.patch is None and result.efficacy is None and result.drift is None
    assert result.sampler == {"steps": 20, "guidance": 5.0} and result.model.name == "world"
    assert len(result.concepts) == len(world_bench().concepts)
    for row in result.concepts:
        assert row.m >= 0.9, row
        assert row.interval[0] <= row.m <= row.interval[1]
    assert set(result.categories) == {"object", "style", "id", "color", "unsafe"}
    assert json.loads(result.to_json())["concepts"][0]["name"] == "circle"


def test_damaged_model_scores_low_and_edit_metrics_are_filled(pipe, detector):
    concepts = ["circle", "square", "striped", "zorvik"]
    patch = _zero_values_patch(pipe, ["circle"])
    result = obliviate.evaluate(pipe, patch=patch, concepts=concepts, images_per_concept=8, detector=detector,
                                progress=False)
    circle = result.concept("circle")
    assert circle.m_base >= 0.9 and circle.m <= 0.4
    by_prompt = circle.prompts  # 8 images over the 4 prompts: each prompt's own M-Score
    assert [p.prompt for p in by_prompt] == list(world_bench().concept("circle").prompts)
    assert all(p.n_images == 2 for p in by_prompt)
    assert np.mean([p.m for p in by_prompt]) == pytest.approx(circle.m)
    assert np.mean([p.m_base for p in by_prompt]) == pytest.approx(circle.m_base)
    assert np.mean([r.m for r in result.concepts]) <= 0.4
    assert result.targets == ["circle"] and result.efficacy >= 0.6
    assert result.preservation <= 0.5 and result.neighbour_preservation is not None
    worst = result.worst_preserved  # the zeroed values draw no concept from its prompt
    assert worst["concept"] in concepts[1:] and worst["preservation"] <= result.preservation
    assert result.drift.frechet > 0 and result.drift.mean_feature_distance > 0
    assert result.patch["method"] == "zero-attn2-values"


def test_base_results_are_cached(pipe, detector, monkeypatch):
    first = obliviate.evaluate(pipe, concepts=["heart"], images_per_concept=4, detector=detector, progress=False)

    def boom(*a, **k):
        raise AssertionError("base images regenerated")

    monkeypatch.setattr(eval_run, "_measure", boom)
    second = obliviate.evaluate(pipe, concepts=["heart"], images_per_concept=4, detector=detector, progress=False)
    assert second.concepts == first.concepts


def test_cli_eval_writes_json_and_report(tmp_path):
    from obliviate.cli import main

    js, html = tmp_path / "e.json", tmp_path / "r.html"
    assert main(["eval", "--concepts", "circle,red", "--images-per-concept", "4", "--json", str(js),
                 "--report", str(html), "--no-progress"]) == 0
    data = json.loads(js.read_text())
    assert set(data) >= TOP_KEYS and [c["name"] for c in data["concepts"]] == ["circle", "red"]
    assert html.is_file() and html.with_suffix(".md").is_file()
    assert "data:image/png;base64," in html.read_text()


def test_cli_eval_refuses_foreign_patch_and_bad_spec(tmp_path, pipe, capsys):
    from obliviate.cli import main

    patch = _zero_values_patch(pipe, ["Van Gogh"])
    other = dict(patch.metadata["base_fingerprint"], layout="0" * 64)
    patch.metadata["base_fingerprint"] = other
    p = patch.save(tmp_path / "foreign.safetensors")
    js = tmp_path / "e.json"
    assert main(["eval", "--patch", str(p), "--concepts", "circle", "--json", str(js), "--no-progress"]) == 2
    assert "made for model" in capsys.readouterr().err  # not "unknown concept 'Van Gogh'"
    assert not js.exists()
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nconcepts: [1, 2\n")
    assert main(["eval", "--bench", str(spec), "--json", str(js)]) == 2
    assert not js.exists()


def test_inversion_asked_twice_runs_once(pipe, detector, monkeypatch):
    """--inversion beside --attacks inversion reuses the attack's result instead of running it again."""
    import obliviate.attacks.run as attack_run
    from obliviate.attacks import AttackResult

    calls = []

    def fake(pipe, concept, attack, *args, **kwargs):
        calls.append(attack.name)
        return AttackResult(concept.name, attack.name, 0.25, 1.0, 0.0, 4, 0.0)

    monkeypatch.setattr(attack_run, "run_attack", fake)
    patch = _zero_values_patch(pipe, ["circle"])
    r = obliviate.evaluate(pipe, patch=patch, concepts=["circle"], images_per_concept=4, detector=detector,
                           inversion=True, attacks="inversion", progress=False, cache=False)
    assert calls == ["inversion"] and r.inversion == {"circle": 0.25}
