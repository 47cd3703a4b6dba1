"""Forget-Me-Not and redirect on the world (real thresholds, small eval); LoRA patches and their export."""

import json

import pytest
import torch

import obliviate
from obliviate.errors import ObliviateError
from obliviate.fingerprint import fingerprint
from obliviate.patch import Patch
from obliviate.terms import token_positions


def _measure(pipe, detector, patch, concepts, n=8):
    return obliviate.evaluate(pipe, patch=patch, concepts=concepts, images_per_concept=n, detector=detector,
                              progress=False)


@pytest.mark.slow
def test_fmn_erases_one_style_and_keeps_most_of_the_rest(pipe, detector):
    # adjectival concepts need a larger step than the defaults (docs/methods.md, FMN: 1.00 on seeds 0-2)
    patch = obliviate.erase(pipe, "striped", "fmn", lr=0.015, steps=120, progress=False)
    assert patch.method == "fmn" and patch.concepts == ["striped"]
    assert patch.base.matches(fingerprint(pipe))  # taken before training, so the patch fits its own model
    assert all(k.startswith("delta.unet.") and (".attn2.to_q." in k or ".attn2.to_k." in k) for k in patch.tensors)
    r = _measure(pipe, detector, patch, None)  # the whole bench: which neighbour style goes varies (below)
    assert r.efficacy >= 0.9, r
    # not 0.9: these settings take a neighbour style with striped, which one depends on the float summation
    # order (seed 0: checkered with 2 torch threads, preservation 0.953; three concepts with 1, 0.894;
    # docs/methods.md, FMN)
    assert r.preservation >= 0.85, r


@pytest.mark.slow
def test_fmn_paper_loss_alone_is_not_selective_on_the_world(pipe, detector):
    """Why the preservation anchor exists: without it, re-steering erases the neighbours too."""
    patch = obliviate.erase(pipe, "zorvik", "fmn", preserve_weight=0, include_context=False, lr=1e-3, steps=35,
                            trainable="attn2", progress=False)
    r = _measure(pipe, detector, patch, ["zorvik", "maelin", "tavi", "circle"])
    assert r.preservation < 0.8, r


@pytest.mark.slow
def test_redirect_makes_the_concept_prompts_draw_another(pipe, detector):
    patch = obliviate.erase(pipe, "star", "redirect", redirect="heart", progress=False)
    config = patch.metadata["config"]
    assert patch.method == "redirect" and config["trainable"] == "attn2" and config["steps"] == 60
    prompts = list(obliviate.catalog_for(pipe).concept("star").prompts)
    images = obliviate.generate(pipe, prompts, n=16, seed=0, patch=patch, progress=False)
    drawn = detector.predict(images)["object"]
    assert (drawn == "heart").mean() >= 0.9 and (drawn == "star").mean() <= 0.1  # docs: 1.00 over seeds 0-2
    with pytest.raises(ObliviateError, match="redirect needs"):
        obliviate.erase(pipe, "star", "redirect", steps=1, progress=False)


def test_fmn_several_concepts_in_one_run(pipe):
    patch = obliviate.erase(pipe, ["star", "moon"], "fmn", steps=2, progress=False)
    assert patch.concepts == ["star", "moon"] and patch.metadata["config"]["steps"] == 2


def test_methods_never_write_the_pipeline_weights(pipe):
    """The edit trains functionally on float32 copies: during and after training the pipeline is untouched."""
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    versions = {n: p._version for n, p in pipe.unet.named_parameters()}
    obliviate.erase(pipe, "star", "fmn", steps=3, progress=False)
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    assert versions == {n: p._version for n, p in pipe.unet.named_parameters()}


def test_lora_patch_exports_to_diffusers_and_gives_the_same_images(pipe, tmp_path):
    patch = obliviate.erase(pipe, "heart", "fmn", steps=5, trainable="lora", rank=2, progress=False)
    assert any(k.startswith("lora_down.") for k in patch.tensors)
    ours = obliviate.generate(pipe, "a photo of a heart", n=2, patch=patch, progress=False)
    lora = patch.save_diffusers_lora(tmp_path / "pytorch_lora_weights.safetensors")
    fresh = obliviate.load_pipeline("world")
    fresh.load_lora_weights(str(tmp_path), weight_name=lora.name)
    theirs = obliviate.generate(fresh, "a photo of a heart", n=2, progress=False)
    assert abs(ours.astype(int) - theirs.astype(int)).max() <= 2


def test_missing_concept_word_and_empty_folder_write_no_patch(tmp_path):
    from obliviate.cli import main

    out = tmp_path / "p.safetensors"
    assert main(["erase", "--concept", "unicorn", "--out", str(out), "--no-progress"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["erase", "--concept", "circle", "--images", str(tmp_path / "empty"), "--out", str(out),
                 "--no-progress"]) == 2
    assert main(["erase", "--concept", "circle", "--lr", "1e30", "--steps", "5", "--out", str(out),
                 "--no-progress"]) == 2  # the loss blows up: a clear error, not a broken patch
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_cli_erase_json(tmp_path, capsys):
    from obliviate.cli import main

    out = tmp_path / "p.safetensors"
    assert main(["erase", "--concept", "moon", "--steps", "3", "--preserve-weight", "50", "--out", str(out),
                 "--json", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"patch", "method", "concepts", "seconds"} and data["concepts"] == ["moon"]
    config = Patch.load(out).metadata["config"]
    assert config["steps"] == 3 and config["preserve_weight"] == 50 and config["trainable"] == "attn2-qk"
    bad = tmp_path / "esd.safetensors"
    assert main(["erase", "--method", "esd-x", "--concept", "moon", "--preserve-weight", "5", "--out", str(bad),
                 "--no-progress"]) == 2 and not bad.exists()
    assert "--preserve-weight is for --method fmn" in capsys.readouterr().err


def test_token_positions_refuse_a_prompt_without_the_concept(pipe):
    with pytest.raises(ObliviateError, match="cannot find"):
        token_positions(pipe, ["a photo of a dog"], ["church"])
