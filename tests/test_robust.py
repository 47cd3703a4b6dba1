"""The robust methods on the world: RECE, AdvUnlearn and STEREO (real thresholds, default settings)."""

import pytest

import obliviate
from obliviate.catalog import catalog_for
from obliviate.methods import get_method
from obliviate.methods.closed_form import concept_pairs, text_projections
from obliviate.methods.rece import adversarial_map

KEPT = ["zorvik", "maelin", "circle", "striped", "red"]


def _eval(pipe, detector, patch, concepts=KEPT, n=8):
    return obliviate.evaluate(pipe, patch=patch, concepts=concepts, images_per_concept=n, detector=detector,
                              progress=False)


def test_rece_erases_the_embeddings_uce_leaves(pipe, detector):
    """The derived embedding is RECE's equation: on UCE's edit it reproduces the original keys and values of the
    concept better than the concept's own vector does, and after RECE's rounds it no longer does."""
    original = text_projections(pipe)
    concept = catalog_for(pipe).concept("zorvik")
    c = concept_pairs(pipe, concept, "")[0]

    def miss(patch, vectors):  # how far the edited projections are from the original ones on the concept
        edited = {n: w + patch.tensors[f"delta.unet.{n}"].double() for n, w in original.items()}
        return sum(float(((vectors @ edited[n].T - c @ w.T) ** 2).sum()) for n, w in original.items()), edited

    uce = obliviate.erase(pipe, "zorvik", "uce", progress=False)
    uce_miss, uce_edited = miss(uce, c)
    derived = c @ adversarial_map(uce_edited, original, 0.1).T
    assert miss(uce, derived)[0] < 0.5 * uce_miss  # UCE leaves an embedding that still reaches zorvik
    rece = obliviate.erase(pipe, "zorvik", "rece", progress=False)
    assert rece.method == "rece" and get_method("rece").make_config().rounds == 3
    assert miss(rece, derived)[0] > miss(uce, derived)[0]  # ... which RECE erases
    r = _eval(pipe, detector, rece)
    assert r.efficacy >= 0.9 and r.preservation >= 0.9, r


@pytest.mark.slow
def test_advunlearn_edits_the_text_encoder_and_holds_against_unlearndiff(pipe, detector):
    patch = obliviate.erase(pipe, "zorvik", "advunlearn", progress=False)
    assert patch.tensors and all(k.startswith("delta.text_encoder.") for k in patch.tensors)
    assert not any("embeddings." in k for k in patch.tensors)  # the vocabulary stays out of the patch
    r = _eval(pipe, detector, patch)
    assert r.efficacy >= 0.9 and r.preservation >= 0.9, r
    attacked = obliviate.attack(pipe, "zorvik", "unlearndiff", patch=patch, detector=detector, steps=100,
                                ceiling=False, progress=False)
    assert attacked.asr <= 0.2, attacked


@pytest.mark.slow
def test_stereo_erases_the_embeddings_concept_inversion_finds(pipe, detector):
    """Concept inversion brings zorvik back in every image after UCE (test_attacks); after STEREO, which erased
    three such embeddings, much less often."""
    patch = obliviate.erase(pipe, "zorvik", "stereo", progress=False)
    assert patch.metadata["adversarial_embeddings"] == 3 and all(".attn2." in k for k in patch.tensors)
    r = _eval(pipe, detector, patch)
    assert r.efficacy >= 0.9 and r.preservation >= 0.85, r
    attacked = obliviate.attack(pipe, "zorvik", "inversion", patch=patch, detector=detector, ceiling=False,
                                progress=False)
    assert attacked.asr <= 0.6, attacked


@pytest.fixture(scope="module")
def lethe_zorvik(pipe):
    return obliviate.erase(pipe, "zorvik", "lethe", progress=False)


@pytest.mark.slow
def test_lethe_erases_zorvik_and_holds_against_inversion_and_completion(pipe, detector, lethe_zorvik):
    """Issue #16's target on one concept: the attacks that bring back every other erasure here find nothing."""
    assert lethe_zorvik.metadata["adversarial_embeddings"] == 2
    r = obliviate.evaluate(pipe, patch=lethe_zorvik, images_per_concept=16, detector=detector, progress=False)
    assert r.efficacy >= 0.9 and r.preservation >= 0.95 and r.neighbour_preservation >= 0.9, r
    for attack in ("inversion", "completion"):
        attacked = obliviate.attack(pipe, "zorvik", attack, patch=lethe_zorvik, detector=detector, ceiling=False,
                                    progress=False)
        assert attacked.asr <= 0.2, attacked


@pytest.mark.slow
def test_memory_attack_needs_more_steps_after_lethe_than_on_the_base_model(pipe, detector, lethe_zorvik):
    r = obliviate.attack(pipe, "zorvik", "memory", patch=lethe_zorvik, detector=detector, steps=50,
                         check_every=25, progress=False)
    assert r.details["base_steps_to_reach"] == 25 and r.asr_base >= 0.9  # the base model draws it already
    assert r.details["steps_to_reach"] is None and r.asr <= 0.2, r.details  # 50 steps do not bring it back
    assert set(r.details["rate_by_step"]) == {25, 50}


@pytest.mark.parametrize("bad, message", [
    ({"adversary_steps": 0}, "adversary_steps must be at least 1"), ({"adversary_batch": 0}, "adversary_batch"),
    ({"t_max": 1.5}, "t_max must be a fraction"), ({"t_min": 0.8}, "need t_min < t_max"),
    ({"keep_neighbours": 1.5}, "keep_neighbours must be a share"), ({"neutral_rows": -1}, "neutral_rows"),
    ({"weight_adversary_steps": 1}, "does not take 'weight_adversary_steps'"), ({"steps": 2.5}, "whole number")])
def test_lethe_refuses_bad_settings_before_any_work(pipe, bad, message, monkeypatch):
    from obliviate.methods import lethe

    monkeypatch.setattr(lethe, "keep_bank", lambda *a, **k: pytest.fail("started the erasure before refusing"))
    with pytest.raises(obliviate.ObliviateError, match=message):
        obliviate.erase(pipe, "zorvik", "lethe", progress=False, **bad)


def test_the_keep_bank_knows_each_prompts_category(pipe):
    """Lethe's keep_neighbours draws from the erased concept's category: red's neighbours are the other colours."""
    from obliviate.terms import keep_bank

    catalog = catalog_for(pipe)
    bank = keep_bank(pipe, catalog, [catalog.bench.concept("red")], None, 0)
    assert len(bank.categories) == len(bank.prompts) == len(bank.cond)
    colours = {p for p, c in zip(bank.prompts, bank.categories, strict=True) if c == "color"}
    assert colours and all("red" not in p.split() for p in colours)
    assert any("yellow" in p for p in colours) and not any("zorvik" in p for p in colours)
