"""Patch files: round trip, exact apply/remove/merge, refusal of patches for other models or changed files."""

import json
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from obliviate import Patch, load_pipeline
from obliviate.errors import ObliviateError
from obliviate.fingerprint import fingerprint


def _attn2_names(pipe, proj="to_v"):
    return [n for n, _ in pipe.unet.named_parameters() if f"attn2.{proj}.weight" in n]


def _delta_patch(pipe, scale=0.01, proj="to_v"):
    gen = torch.Generator().manual_seed(0)
    tensors = {f"delta.unet.{n}": torch.randn(pipe.unet.get_parameter(n).shape, generator=gen) * scale
               for n in _attn2_names(pipe, proj)}
    return Patch(tensors, {"method": "test", "concepts": ["circle"], "base_fingerprint": fingerprint(pipe).to_dict()})


def _state(pipe):
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def test_save_load_round_trip_and_mode(tmp_path, pipe):
    patch = _delta_patch(pipe)
    path = patch.save(tmp_path / "p.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # an ordinary output file, not 0600
    loaded = Patch.load(path)
    assert loaded.metadata["method"] == "test" and loaded.metadata["format"].startswith("obliviate.patch")
    assert loaded.metadata["obliviate_version"]
    assert loaded.content_hash() == patch.content_hash()
    assert set(loaded.tensors) == set(patch.tensors)
    assert all(torch.equal(loaded.tensors[k], patch.tensors[k]) for k in patch.tensors)


def test_apply_then_remove_is_bit_identical(pipe):
    before = _state(pipe)
    with _delta_patch(pipe).applied(pipe):
        changed = _state(pipe)
        assert any(not torch.equal(before[k], changed[k]) for k in before)
    after = _state(pipe)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_applied_removes_the_patch_even_when_the_block_fails(pipe):
    before = _state(pipe)
    with pytest.raises(RuntimeError), _delta_patch(pipe).applied(pipe):
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in _state(pipe).items())


def test_merge_bakes_in(pipe):
    before = _state(pipe)
    patch = _delta_patch(pipe)
    patch.merge(pipe)
    try:
        name = _attn2_names(pipe)[0]
        expect = before[name] + patch.tensors[f"delta.unet.{name}"]
        assert torch.allclose(pipe.unet.get_parameter(name), expect)
        from obliviate.patch import remove_patch

        with pytest.raises(ObliviateError):
            remove_patch(pipe)  # nothing left to remove: merged patches are permanent
    finally:
        pipe.unet.load_state_dict(before)


def test_a_merged_world_model_is_still_evaluated_as_the_world(tmp_path, capsys):
    """save_merged names the base in the folder: an edit large enough to move the fingerprint off the world's
    keeps the world's bench and detector (the catalog), and the model is named by its folder."""
    from obliviate.catalog import BenchCatalog, WorldCatalog, catalog_for, world_weights
    from obliviate.pipeline import model_name, save_merged
    from obliviate.preflight import is_world_based

    fresh = load_pipeline("world")
    out = save_merged(fresh, [_delta_patch(fresh, scale=1.0)], tmp_path / "merged")
    with pytest.raises(ObliviateError, match="exists"):
        save_merged(fresh, [], out)
    merged = load_pipeline(str(out))
    assert not world_weights(merged) and is_world_based(merged) and is_world_based(str(out))
    assert model_name(merged) == str(out)
    assert isinstance(catalog_for(merged), WorldCatalog)
    from obliviate.cli import main

    assert main(["eval", "--model", str(out), "--concepts", "nosuch"]) == 2  # checked before the model loads
    assert "bench 'world'" in capsys.readouterr().err
    (out / "obliviate.json").unlink()
    assert isinstance(catalog_for(load_pipeline(str(out))), BenchCatalog)  # without the marker: any SD model
    assert not is_world_based(str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary folder left behind


def test_patch_for_another_model_is_refused(pipe):
    patch = _delta_patch(pipe)
    other = dict(patch.metadata["base_fingerprint"])
    other["probe"] = [v + 0.5 for v in other["probe"]]
    patch.metadata["base_fingerprint"] = other
    with pytest.raises(ObliviateError, match="made for model"):
        patch.apply(pipe)
    patch.apply(pipe, force=True).remove()


def test_a_patch_made_on_world_v1_is_refused_by_name(pipe):
    """tests/data holds a real UCE patch made on the retired world v1 (same layer shapes as today's UNet)."""
    from pathlib import Path

    old = Patch.load(Path(__file__).parent / "data" / "world-v1-uce-zorvik.safetensors")
    with pytest.raises(ObliviateError, match="made for the embedded world v1"):
        old.apply(pipe)


def test_a_float32_patch_fits_the_same_model_in_bfloat16():
    """The fingerprint tells base models apart, not dtypes: rounding to bf16 keeps it matching."""
    base = load_pipeline("world")
    half = load_pipeline("world", dtype="bfloat16")
    assert fingerprint(half).matches(fingerprint(base))
    patch = _delta_patch(base)
    before = {k: v.clone() for k, v in half.unet.state_dict().items()}
    with patch.applied(half):
        name = _attn2_names(half)[0]
        assert not torch.equal(half.unet.get_parameter(name), before[name])
    assert all(torch.equal(before[k], v) for k, v in half.unet.state_dict().items())


def test_patch_with_wrong_shapes_is_refused_even_when_forced(pipe):
    name = _attn2_names(pipe)[0]
    patch = Patch({f"delta.unet.{name}": torch.zeros(3, 3)}, {"method": "test", "concepts": []})
    with pytest.raises(ObliviateError, match="does not fit"):
        patch.apply(pipe, force=True)
    patch = Patch({"delta.unet.no.such.weight": torch.zeros(3, 3)}, {"method": "test", "concepts": []})
    with pytest.raises(ObliviateError, match="does not fit"):
        patch.apply(pipe, force=True)


def _meta(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_changed_tensors_or_metadata_or_foreign_files_are_refused(tmp_path, pipe):
    path = _delta_patch(pipe).save(tmp_path / "p.safetensors")
    tensors, meta = load_file(str(path)), _meta(path)
    key = next(iter(tensors))
    save_file({**tensors, key: tensors[key] + 1e-3}, str(tmp_path / "tampered.safetensors"), metadata=meta)
    with pytest.raises(ObliviateError, match="modified"):
        Patch.load(tmp_path / "tampered.safetensors")
    for field, value in (("concepts", ["Van Gogh"]), ("method", "uce"), ("base_fingerprint", None)):
        edited = {**json.loads(meta["obliviate"]), field: value}
        save_file(tensors, str(tmp_path / "meta.safetensors"), metadata={"obliviate": json.dumps(edited)})
        with pytest.raises(ObliviateError, match="modified"):
            Patch.load(tmp_path / "meta.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ObliviateError, match="not an obliviate patch"):
        Patch.load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ObliviateError):
        Patch.load(tmp_path / "junk.safetensors")
    with pytest.raises(ObliviateError, match="does not exist"):
        Patch.load(tmp_path / "missing.safetensors")
    old = dict(meta, obliviate=json.dumps({**json.loads(meta["obliviate"]), "format": "obliviate.patch/1"}))
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)
    with pytest.raises(ObliviateError, match="format 'obliviate.patch/1'"):
        Patch.load(tmp_path / "old.safetensors")
