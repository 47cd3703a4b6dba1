"""Forget-Me-Not on the world (real thresholds, small eval) and on tiny SD 1.5 / 2.1 architectures."""

import json

import pytest
import torch

from obliviate.attention import token_positions
from obliviate.errors import ObliviateError
from obliviate.eval.run import EvalConfig, evaluate
from obliviate.methods.fmn import FMNConfig, fit
from obliviate.patch import Patch, apply_patch, remove_patch, save_diffusers_lora


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path_factory.getbasetemp() / "eval-cache"))


def _measure(model, detector, patch, concepts, n=8):
    return evaluate(model, EvalConfig(concepts=concepts, images_per_concept=n, progress=False),
                    detector=detector, patches=[patch]).result


def test_fmn_erases_one_style_and_preserves_the_rest(world_model, detector):
    patch = fit(world_model, ["striped"], FMNConfig(progress=False))
    assert patch.metadata["method"] == "fmn" and patch.concepts == ["striped"]
    assert patch.metadata["base_fingerprint"] == world_model.fingerprint
    assert all(k.startswith("delta.unet.") and (".attn2.to_q." in k or ".attn2.to_k." in k) for k in patch.tensors)
    r = _measure(world_model, detector, patch, ["striped", "dotted", "outlined", "gradient", "circle", "red",
                                                "zorvik"])
    assert r["efficacy"] >= 0.9, r
    assert r["preservation"] >= 0.9 and r["neighbour_preservation"] >= 0.9, r


def test_fmn_paper_loss_alone_is_not_selective_on_the_world(world_model, detector):
    """Why the preservation anchor exists: without it, re-steering erases the neighbours too."""
    patch = fit(world_model, ["zorvik"], FMNConfig(preserve_weight=0, include_context=False, lr=1e-3, steps=35,
                                                   trainable="attn2", progress=False))
    r = _measure(world_model, detector, patch, ["zorvik", "maelin", "tavi", "circle"])
    assert r["preservation"] < 0.8, r


def test_fmn_redirect_makes_the_concept_prompts_draw_another(world_model, detector):
    from obliviate.generate import generate, image_seeds
    from obliviate.world import concept_by_name

    patch = fit(world_model, ["star"], FMNConfig(redirect="heart", progress=False))
    config = patch.metadata["config"]
    assert config["trainable"] == "attn2" and config["attention_weight"] == 0 and config["steps"] == 60
    prompts = list(concept_by_name("star").prompts)
    handle = apply_patch(world_model.pipe, patch)
    images = generate(world_model, [prompts[i % 4] for i in range(16)], image_seeds(0, 16), progress=False)
    remove_patch(world_model.pipe, handle)
    # issue #4 asks 0.8; measured 1.00 over erasure seeds 0-2 and four pairs (docs/benchmarks.md)
    drawn = detector.predict(images)["object"]
    assert (drawn == "heart").mean() >= 0.9 and (drawn == "star").mean() <= 0.1
    with pytest.raises(ObliviateError, match="attention-weight"):
        fit(world_model, ["star"], FMNConfig(attention_weight=0, steps=1, progress=False))


def test_fmn_several_concepts_in_one_run(world_model):
    patch = fit(world_model, ["star", "moon"], FMNConfig(steps=2, progress=False))
    assert patch.concepts == ["star", "moon"] and patch.metadata["config"]["steps"] == 2


def test_fmn_leaves_weights_untouched_after_fit(world_model):
    before = {k: v.clone() for k, v in world_model.pipe.unet.state_dict().items()}
    fit(world_model, ["star"], FMNConfig(steps=3, progress=False))
    after = world_model.pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lora_patch_exports_to_diffusers_and_gives_the_same_images(world_model, tmp_path):
    from obliviate.generate import generate
    from obliviate.pipeline import load_model

    patch = fit(world_model, ["heart"], FMNConfig(steps=5, trainable="lora", rank=2, progress=False))
    assert any(k.startswith("lora_down.") for k in patch.tensors)
    handle = apply_patch(world_model.pipe, patch)
    ours = generate(world_model, ["a photo of a heart"] * 2, [0, 1], progress=False)
    remove_patch(world_model.pipe, handle)
    lora = save_diffusers_lora(patch, tmp_path / "pytorch_lora_weights.safetensors")
    fresh = load_model("world")
    fresh.pipe.load_lora_weights(str(tmp_path), weight_name=lora.name)
    theirs = generate(fresh, ["a photo of a heart"] * 2, [0, 1], progress=False)
    assert abs(ours.astype(int) - theirs.astype(int)).max() <= 2


def test_missing_concept_word_and_empty_folder_write_no_patch(world_model, tmp_path):
    from obliviate.cli import main

    out = tmp_path / "p.safetensors"
    assert main(["erase", "--concept", "unicorn", "--out", str(out), "--no-progress"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["erase", "--concept", "circle", "--images", str(tmp_path / "empty"), "--out", str(out),
                 "--no-progress"]) == 2
    assert main(["erase", "--concept", "circle", "--lr", "1e30", "--steps", "5", "--out", str(out),
                 "--no-progress"]) == 2  # the loss blows up: a clear error, not a broken patch
    assert main(["erase", "--concept", "circle", "--attention-weight", "0", "--out", str(out),
                 "--no-progress"]) == 2  # nothing would erase it
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


@pytest.mark.parametrize("version", ["1.5", "2.1"])
def test_fmn_code_path_on_tiny_sd_architectures(tmp_path, version):
    from tiny_sd import make_tiny_sd

    from obliviate.attention import attn2_names
    from obliviate.pipeline import load_model

    model = load_model(str(make_tiny_sd(tmp_path, version)))
    assert len(attn2_names(model.pipe.unet)) == 16  # SD's 6 down + 1 mid + 9 up cross-attention layers
    patch = fit(model, ["church"], FMNConfig(steps=2, batch_size=2, n_images=2, progress=False))
    assert patch.tensors and patch.concepts == ["church"]
    handle = apply_patch(model.pipe, patch)
    remove_patch(model.pipe, handle)
    with pytest.raises(ObliviateError, match="cannot find"):
        token_positions(model.pipe.tokenizer, ["a photo of a dog"], ["church"])
