"""Patch files: round trip, exact apply/remove, refusal of patches for other models or tampered files."""

import json

import pytest
import torch

from obliviate.errors import ObliviateError
from obliviate.patch import Patch, apply_patch, merge_patch, remove_patch


def _attn2_names(pipe, proj="to_v"):
    return [n for n, _ in pipe.unet.named_parameters() if f"attn2.{proj}.weight" in n]


def _delta_patch(model, scale=0.01, proj="to_v"):
    gen = torch.Generator().manual_seed(0)
    tensors = {f"delta.unet.{n}": torch.randn(model.pipe.unet.get_parameter(n).shape, generator=gen) * scale
               for n in _attn2_names(model.pipe, proj)}
    return Patch(tensors, {"method": "test", "concepts": ["circle"], "base_fingerprint": model.fingerprint})


def _state(pipe):
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def test_save_load_round_trip(tmp_path, world_model):
    patch = _delta_patch(world_model)
    path = patch.save(tmp_path / "p.safetensors")
    loaded = Patch.load(path)
    assert loaded.metadata["method"] == "test" and loaded.metadata["format"].startswith("obliviate.patch")
    assert loaded.metadata["obliviate_version"]
    assert set(loaded.tensors) == set(patch.tensors)
    assert all(torch.equal(loaded.tensors[k], patch.tensors[k]) for k in patch.tensors)


def test_apply_then_remove_is_bit_identical(world_model):
    pipe = world_model.pipe
    before = _state(pipe)
    handle = apply_patch(pipe, _delta_patch(world_model))
    changed = _state(pipe)
    assert any(not torch.equal(before[k], changed[k]) for k in before)
    remove_patch(pipe, handle)
    after = _state(pipe)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_merge_bakes_in(world_model):
    pipe = world_model.pipe
    before = _state(pipe)
    patch = _delta_patch(world_model)
    merge_patch(pipe, patch)
    try:
        name = _attn2_names(pipe)[0]
        expect = before[name] + patch.tensors[f"delta.unet.{name}"]
        assert torch.allclose(pipe.unet.get_parameter(name), expect)
        with pytest.raises(ObliviateError):
            remove_patch(pipe)  # nothing left to remove: merged patches are permanent
    finally:
        pipe.unet.load_state_dict(before)


def test_patch_for_another_model_is_refused(world_model):
    patch = _delta_patch(world_model)
    patch.metadata["base_fingerprint"] = "0123456789abcdef"
    with pytest.raises(ObliviateError, match="made for model"):
        apply_patch(world_model.pipe, patch)
    handle = apply_patch(world_model.pipe, patch, force=True)
    remove_patch(world_model.pipe, handle)


def test_patch_with_wrong_shapes_is_refused_even_when_forced(world_model):
    name = _attn2_names(world_model.pipe)[0]
    patch = Patch({f"delta.unet.{name}": torch.zeros(3, 3)}, {"method": "test", "concepts": []})
    with pytest.raises(ObliviateError, match="does not fit"):
        apply_patch(world_model.pipe, patch, force=True)
    patch = Patch({"delta.unet.no.such.weight": torch.zeros(3, 3)}, {"method": "test", "concepts": []})
    with pytest.raises(ObliviateError, match="does not fit"):
        apply_patch(world_model.pipe, patch, force=True)


def test_tampered_or_foreign_files_are_refused(tmp_path, world_model):
    from safetensors.torch import load_file, save_file

    path = _delta_patch(world_model).save(tmp_path / "p.safetensors")
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1e-3
    save_file(tensors, str(tmp_path / "tampered.safetensors"), metadata=meta)
    with pytest.raises(ObliviateError, match="modified"):
        Patch.load(tmp_path / "tampered.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ObliviateError, match="not an obliviate patch"):
        Patch.load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ObliviateError):
        Patch.load(tmp_path / "junk.safetensors")
    with pytest.raises(ObliviateError, match="does not exist"):
        Patch.load(tmp_path / "missing.safetensors")
    bad_meta = dict(meta, obliviate=json.dumps({**json.loads(meta["obliviate"]), "format": "other/9"}))
    save_file(load_file(str(path)), str(tmp_path / "future.safetensors"), metadata=bad_meta)
    with pytest.raises(ObliviateError, match="format"):
        Patch.load(tmp_path / "future.safetensors")
