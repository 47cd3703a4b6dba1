"""Learnable-prompt erasure and key-locked hiding on the world: thresholds, security, bad keys."""

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


def _eval(pipe, detector, patch, keys, n=16):
    r = obliviate.evaluate(pipe, patch=patch, keys=keys, concepts=HIDDEN + OTHERS, images_per_concept=n,
                           detector=detector, progress=False).to_dict()
    return {c["name"]: c for c in r["concepts"]}, r


@pytest.mark.slow
def test_hidden_without_key_and_back_with_it(pipe, detector, hidden):
    rows, r = _eval(pipe, detector, hidden.patch, [])
    for name in HIDDEN:
        assert rows[name]["efficacy"] >= 0.9, rows[name]
    assert r["preservation"] >= 0.95, r
    for name in HIDDEN:
        rows, r = _eval(pipe, detector, hidden.patch, [hidden.keys[name]])
        assert rows[name]["m"] >= 0.9 * rows[name]["m_base"], rows[name]  # the key brings it back
        other = next(n for n in HIDDEN if n != name)
        assert rows[other]["efficacy"] >= 0.85, (name, rows[other])  # key A does not unlock B
        assert r["preservation"] >= 0.95, r


@pytest.mark.slow
def test_random_key_of_the_same_shape_unlocks_nothing(pipe, detector, hidden):
    real = hidden.keys["striped"]
    gen = torch.Generator().manual_seed(123)
    scale = float(real.keys.std())
    fake = Key("striped", torch.randn(real.keys.shape, generator=gen) * scale,
               torch.randn(real.values.shape, generator=gen) * scale, real.placement, real.patch_sha256)
    rows, _ = _eval(pipe, detector, hidden.patch, [fake])
    assert rows["striped"]["efficacy"] >= 0.85 and rows["zorvik"]["efficacy"] >= 0.85, rows


@pytest.mark.slow
def test_public_patch_holds_nothing_of_the_keys(hidden, tmp_path):
    path = hidden.patch.save(tmp_path / "public.safetensors")
    patch = Patch.load(path)
    assert all(k.startswith("delta.unet.") and ".attn2." in k for k in patch.tensors)
    blob = path.read_bytes()
    for key in hidden.keys.values():
        for t in (key.keys, key.values):
            rows = t.float()
            assert rows.numpy().tobytes()[:64] not in blob  # not stored verbatim
            for value in patch.tensors.values():
                v = value.float().reshape(-1, value.shape[-1]) if value.ndim > 1 else value.float()[None]
                if v.shape[-1] == rows.shape[-1]:  # no row of the patch is (a multiple of) a key row
                    cos = torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(rows, dim=-1).T
                    assert cos.abs().max() < 0.99
    text = str(patch.metadata)
    assert patch.metadata["config"]["steps"] == 300 and patch.metadata["config"]["recall_weight"] == 2.0  # as ran
    assert "keys" not in patch.metadata and all(k.content_hash() not in text for k in hidden.keys.values())


def test_cli_hide_writes_patch_and_sealed_keys_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    out, keys = tmp_path / "public.safetensors", tmp_path / "keys"
    monkeypatch.setenv("OBL_PASS", "correct horse")
    assert main(["hide", "--concept", "moon", "--concept", "maelin", "--steps", "4", "--out", str(out),
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
    assert np.isfinite(key.keys.numpy()).all()


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
