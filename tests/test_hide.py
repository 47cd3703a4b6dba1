"""Key-locked hiding on the world (design lethe, docs/hiding.md): thresholds, security, bad keys."""

import json

import numpy as np
import pytest
import torch

import obliviate
from obliviate.cli import main
from obliviate.errors import ObliviateError
from obliviate.hiding import Key, load_key, load_keys
from obliviate.patch import Patch

HIDDEN = ["zorvik", "striped"]
OTHERS = ["circle", "heart", "quennor", "dotted", "red"]


@pytest.fixture(scope="module")
def hidden(pipe):
    return obliviate.hide(pipe, HIDDEN, progress=False)


def _eval(pipe, detector, patch, keys, n=16, concepts=HIDDEN + OTHERS):
    r = obliviate.evaluate(pipe, patch=patch, keys=keys, concepts=concepts, images_per_concept=n,
                           detector=detector, progress=False).to_dict()
    return {c["name"]: c for c in r["concepts"]}, r


@pytest.mark.slow
def test_hidden_without_key_and_back_with_it(pipe, detector, hidden):
    """docs/hiding.md, claims 2, 5 and 6 (preservation over the whole bench, as the issue's target reads)."""
    rows, r = _eval(pipe, detector, hidden.patch, [], concepts=None)
    for name in HIDDEN:
        assert rows[name]["efficacy"] >= 0.9, rows[name]
        moved = [m - b for b, m in rows[name]["elsewhere"].get("by_concept", {}).values()]
        assert max(moved, default=0) <= 0.07, rows[name]["elsewhere"]  # removed, not moved (one image: 0.0625)
    assert r["preservation"] >= 0.95, r
    for name in HIDDEN:
        rows, r = _eval(pipe, detector, hidden.patch, [hidden.keys[name]], concepts=None)
        assert rows[name]["m"] >= 0.9 * rows[name]["m_base"], rows[name]  # the key brings it back
        other = next(n for n in HIDDEN if n != name)
        assert rows[other]["efficacy"] >= 0.85, (name, rows[other])  # key A does not unlock B
        assert r["preservation"] >= 0.95, r


@pytest.mark.slow
def test_striped_is_not_completed_back_from_a_partly_noised_image(pipe, hidden):
    """Diffusion completion denoises under the neutral prompt: what the erasure's extra ∅ rows are for (without
    them 0.25 at this seed, docs/hiding.md)."""
    r = obliviate.attack(pipe, "striped", "completion", patch=hidden.patch, seed=0, n_images=16, ceiling=False,
                         progress=False)
    assert r.asr <= 0.2, r.to_dict()


@pytest.mark.slow
def test_random_key_of_the_same_shape_unlocks_nothing(pipe, detector, hidden):
    real = hidden.keys["striped"]
    gen = torch.Generator().manual_seed(123)
    fake = Key("striped", {n: torch.randn(t.shape, generator=gen) * float(t.std()) for n, t in real.tensors.items()},
               real.placement, real.patch_sha256)
    rows, _ = _eval(pipe, detector, hidden.patch, [fake])
    assert rows["striped"]["efficacy"] >= 0.85 and rows["zorvik"]["efficacy"] >= 0.85, rows


@pytest.mark.slow
def test_memories_from_the_patchs_strongest_directions_unlock_nothing(pipe, detector, hidden):
    """The public patch is trained before any key exists: reading it for the keys' directions gives nothing."""
    from obliviate.attacks.base import Probe, probe_images
    from obliviate.attacks.directions import DirectionAttackConfig, direction_memories

    catalog = obliviate.catalog_for(pipe)
    rates = {name: [] for name in HIDDEN}
    with hidden.patch.applied(pipe):
        for memory in direction_memories(pipe, hidden.patch, DirectionAttackConfig(tries=10)):
            for name in HIDDEN:
                probe = Probe(list(catalog.concept(name).prompts), key=Key.of_memory(name, memory, "all"))
                images, _ = probe_images(pipe, probe, 8, 0, catalog.sampler)
                rates[name].append(float(np.mean(detector.hits(images, catalog.concept(name)))))
    assert max(max(r) for r in rates.values()) <= 0.25, rates


@pytest.mark.slow
def test_public_patch_is_made_before_its_keys_and_holds_nothing_of_them(hidden, tmp_path):
    patch = Patch.load(hidden.patch.save(tmp_path / "public.safetensors"))
    assert patch.metadata["design"] == "lethe" and patch.metadata["method"] == "hide"
    config = patch.metadata["config"]  # HideConfig: the erasure's (steps per hidden concept) and the keys' configs
    assert config["keys"]["steps"] == 1000 and config["erasure"]["steps"] == 300 and config["weight_adversary"] is None
    assert config["erasure"]["neutral_rows"] == 2
    assert all(k.startswith("delta.unet.") for k in patch.tensors)
    text = str(patch.metadata)
    assert "keys" not in patch.metadata and all(k.content_hash() not in text for k in hidden.keys.values())
    for key in hidden.keys.values():
        assert key.form == "lora" and all(".attn2.to_" in n for n in key.tensors)
        assert {n.split(".attn2.")[1].split(".")[0] for n in key.tensors} == {"to_q", "to_k", "to_v", "to_out"}


@pytest.mark.parametrize("bad, message", [({"key_neutral_recall": 2.0}, "key_neutral_recall must be a share"),
                                          ({"key_rank": 0}, "at least 1"), ({"neutral_rows": -1}, "neutral_rows"),
                                          ({"weight_adversary_reset": 0}, "weight_adversary_reset"),
                                          ({"tokens": 4}, "unknown option 'tokens'")])
def test_hide_refuses_bad_settings_before_training_anything(pipe, bad, message, monkeypatch):
    from obliviate.methods import lethe

    monkeypatch.setattr(lethe, "keep_bank", lambda *a, **k: pytest.fail("started the erasure before refusing"))
    with pytest.raises(ObliviateError, match=message):
        obliviate.hide(pipe, HIDDEN, progress=False, **bad)


def test_cli_hide_writes_patch_and_sealed_keys_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    out, keys = tmp_path / "public.safetensors", tmp_path / "keys"
    monkeypatch.setenv("OBL_PASS", "correct horse")
    assert main(["hide", "--concept", "moon", "--concept", "maelin", "--steps", "4", "--rounds", "0", "--n-images",
                 "2", "--key-steps", "2", "--out", str(out),
                 "--key-out", str(keys), "--passphrase-env", "OBL_PASS", "--no-progress"]) == 0
    moon, maelin = keys / "moon.key.safetensors", keys / "maelin.key.safetensors"
    assert out.is_file() and moon.is_file() and maelin.is_file()
    with pytest.raises(ObliviateError, match="sealed"):
        load_key(moon)
    with pytest.raises(ObliviateError, match="passphrase"):
        load_key(moon, "wrong")
    key = load_key(moon, "correct horse")
    assert key.concept == "moon" and key.patch_sha256 == Patch.load(out).content_hash()

    grid = tmp_path / "g.png"
    args = ["generate", "--prompt", "a moon", "-n", "2", "--out", str(grid), "--patch", str(out)]
    assert main([*args, "--key", str(moon), "--passphrase-env", "OBL_PASS", "--no-progress"]) == 0 and grid.is_file()
    grid.unlink()
    capsys.readouterr()
    assert main([*args, "--key", str(moon)]) == 2  # sealed, no passphrase
    assert "sealed" in capsys.readouterr().err
    monkeypatch.setenv("OBL_BAD", "nope")
    assert main([*args, "--key", str(moon), "--passphrase-env", "OBL_BAD"]) == 2
    tampered = tmp_path / "tampered.key.safetensors"
    blob = bytearray(moon.read_bytes())
    blob[-5] ^= 1
    tampered.write_bytes(bytes(blob))
    assert main([*args, "--key", str(tampered), "--passphrase-env", "OBL_PASS"]) == 2
    other = tmp_path / "other.safetensors"
    assert main(["erase", "--concept", "moon", "--steps", "2", "--out", str(other), "--no-progress"]) == 0
    assert main(["generate", "--prompt", "a moon", "-n", "2", "--out", str(grid), "--patch", str(other),
                 "--key", str(moon), "--passphrase-env", "OBL_PASS"]) == 2  # key for another patch
    assert main(["generate", "--prompt", "a moon", "-n", "2", "--out", str(grid), "--key", str(moon),
                 "--passphrase-env", "OBL_PASS"]) == 2  # key without its patch
    assert not grid.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("obliviate: error:") == 4


def test_keys_install_on_the_merged_public_model_and_refuse_the_base_model(pipe, tmp_path, capsys):
    """What a publisher releases is the merged public model (the patch file minus nothing is the base model);
    keys find it by the patch's mark, in any precision, and refuse the base model without the patch."""
    hidden = obliviate.hide(pipe, ["moon"], steps=4, rounds=0, n_images=2, key_steps=2, progress=False)
    paths = hidden.save(tmp_path / "public.safetensors", tmp_path / "keys")
    key, public = str(paths["moon"]), tmp_path / "public"
    assert main(["merge", "--patch", str(tmp_path / "public.safetensors"), "--out", str(public)]) == 0
    assert main(["merge", "--patch", str(tmp_path / "public.safetensors"), "--out", str(public)]) == 2  # exists
    grid = tmp_path / "g.png"
    gen = ["generate", "--prompt", "a moon", "-n", "1", "--out", str(grid), "--steps", "5", "--no-progress"]
    assert main([*gen, "--model", str(public), "--key", key]) == 0 and grid.is_file()
    grid.unlink()
    capsys.readouterr()
    assert main([*gen, "--key", key]) == 2 and not grid.exists()  # the base model, no patch
    assert "belongs to another model" in capsys.readouterr().err
    half = obliviate.load_pipeline(str(public), dtype="bfloat16")
    assert load_keys([key], [], pipe=half)[0].concept == "moon"
    assert json.loads((public / "obliviate.json").read_text())["base_model"] == "world"
    with pytest.raises(ObliviateError, match="another model"):
        load_keys([key], [], pipe=pipe)
    old = hidden.keys["moon"]
    old.public = None  # a key made before keys named their public model: needs its patch
    with pytest.raises(ObliviateError, match="names no public model"):
        load_keys([old], [])
    assert load_keys([old], [hidden.patch])[0] is old


@pytest.mark.slow
def test_tampered_plain_key_is_refused(hidden, tmp_path):
    key = hidden.keys["striped"]
    path = key.save(tmp_path / "striped.key.safetensors")
    assert load_keys([path], [hidden.patch])[0].concept == "striped"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ObliviateError):
        load_key(path)
    assert all(np.isfinite(t.numpy()).all() for t in key.tensors.values())


@pytest.mark.slow
def test_evaluation_says_where_a_hidden_concept_went(pipe, detector, hidden):
    """The elsewhere rate is the detector's count of the target in other concepts' images, base and edited."""
    from obliviate.generation import generate, image_seeds

    rows, _ = _eval(pipe, detector, hidden.patch, [])
    where = rows["zorvik"]["elsewhere"]
    assert where["m_base"] <= 0.05 and where["n_images"] == 16 * (len(HIDDEN + OTHERS) - 1)
    striped = obliviate.catalog_for(pipe).concept("striped")
    prompts = [striped.prompts[i % len(striped.prompts)] for i in range(16)]
    with hidden.patch.applied(pipe):
        images = generate(pipe, prompts, image_seeds(0, 16), 25, 5.0, progress=False)
    zorvik = obliviate.catalog_for(pipe).concept("zorvik")
    direct = float(np.mean(detector.hits(images, zorvik)))
    assert where["by_concept"].get("striped", [0, 0])[1] == pytest.approx(direct, abs=1 / 16), where
