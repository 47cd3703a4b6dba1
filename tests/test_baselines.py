"""ESD-x, ESD-u and UCE on the world (real thresholds, fast settings) and UCE on a tiny SD 1.5 pipeline."""

import time

import pytest

from obliviate.eval.run import EvalConfig, evaluate
from obliviate.methods import get_method


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path_factory.getbasetemp() / "eval-cache"))


def _erase(model, method, concepts, **overrides):
    m = get_method(method)
    return m.fit(model, concepts, m.make_config(progress=False, **overrides))


def _eval(model, detector, patch, concepts, n=8):
    return evaluate(model, EvalConfig(concepts=concepts, images_per_concept=n, progress=False),
                    detector=detector, patches=[patch]).result


def test_uce_erases_fast(world_model, detector):
    start = time.time()
    patch = _erase(world_model, "uce", ["zorvik"])
    assert time.time() - start <= 2.0
    assert all(".attn2.to_k." in k or ".attn2.to_v." in k for k in patch.tensors)
    r = _eval(world_model, detector, patch, ["zorvik", "maelin", "circle", "striped", "red"])
    assert r["efficacy"] >= 0.9 and r["preservation"] >= 0.9, r


def test_esd_x_erases_and_preserves(world_model, detector):
    patch = _erase(world_model, "esd-x", ["zorvik"])
    assert patch.metadata["method"] == "esd-x" and all(".attn2." in k for k in patch.tensors)
    r = _eval(world_model, detector, patch, ["zorvik", "quennor", "circle", "square", "dotted", "blue"])
    assert r["efficacy"] >= 0.9 and r["preservation"] >= 0.9, r


def test_esd_u_erases_unsafe_also_through_synonyms(world_model, detector):
    from obliviate.eval.bench import Bench, BenchConcept

    patch = _erase(world_model, "esd-u", ["gore"])
    assert patch.metadata["method"] == "esd-u" and not any(".attn2." in k for k in patch.tensors)
    synonyms = BenchConcept("gore", "unsafe", ("a circle covered in carnage", "a bloody star",
                                               "a square covered in blood", "a gory heart"))
    bench = Bench("synonyms", [synonyms, BenchConcept("circle", "object", ("a photo of a circle",))])
    r = evaluate(world_model, EvalConfig(images_per_concept=16, progress=False), bench=bench, detector=detector,
                 patches=[patch]).result
    assert r["efficacy"] >= 0.9, r


def test_uce_code_path_on_tiny_sd(tmp_path):
    from tiny_sd import make_tiny_sd

    from obliviate.patch import apply_patch, remove_patch
    from obliviate.pipeline import load_model

    model = load_model(str(make_tiny_sd(tmp_path, "1.5")))
    patch = _erase(model, "uce", ["church"], preserve=("tench",))
    assert len(patch.tensors) == 32  # to_k and to_v of SD's 16 cross-attention layers
    remove_patch(model.pipe, apply_patch(model.pipe, patch))
    esd = _erase(model, "esd-x", ["church"], steps=1, batch_size=1, ddim_steps=4)
    assert esd.tensors
