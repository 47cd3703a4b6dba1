"""Key files: round trip, sealing with a passphrase, tampering, malformed and foreign keys refused, mode 0600."""

import json
import stat

import pytest
import torch
from safetensors.torch import save as st_save

from obliviate.attention import PromptMemory
from obliviate.errors import ObliviateError
from obliviate.hiding.keys import KEY_FORMAT, LORA, Key, check_key_fits, check_key_width, load_key, unlocked

LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


def _key():
    gen = torch.Generator().manual_seed(0)
    return Key.of_memory("zorvik", PromptMemory(torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)),
                         "all", "ab" * 32)


def _lora_key(pipe, rank=2):
    gen = torch.Generator().manual_seed(0)
    weight = pipe.unet.get_parameter(f"{LAYER}.weight")
    return Key("zorvik", {f"lora_down.unet.{LAYER}": torch.randn(rank, weight.shape[1], generator=gen),
                          f"lora_up.unet.{LAYER}": torch.randn(weight.shape[0], rank, generator=gen)},
               LORA, "ab" * 32)


def test_plain_round_trip(tmp_path):
    key = _key()
    loaded = load_key(key.save(tmp_path / "k.key"))
    assert loaded.concept == "zorvik" and loaded.placement == "all" and loaded.patch_sha256 == key.patch_sha256
    assert torch.equal(loaded.memory.keys, key.memory.keys) and torch.equal(loaded.memory.values, key.memory.values)


def test_lora_key_round_trip_installs_and_comes_off_bit_for_bit(tmp_path, pipe):
    key = _lora_key(pipe)
    loaded = load_key(key.save(tmp_path / "k.key", passphrase="pw"), "pw")
    assert loaded.form == LORA and loaded.content_hash() == key.content_hash()
    weight = pipe.unet.get_parameter(f"{LAYER}.weight")
    before = weight.detach().clone()
    with unlocked(pipe, [loaded]):
        assert not torch.equal(weight, before)
    assert torch.equal(weight, before)
    with pytest.raises(ObliviateError, match="is a LoRA, not a prompt memory"):
        _ = loaded.memory


@pytest.mark.parametrize("sealed", [False, True])
def test_key_files_are_readable_by_their_owner_only(tmp_path, sealed):
    path = _key().save(tmp_path / "k.key", passphrase="pw" if sealed else None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sealed_needs_the_right_passphrase(tmp_path):
    path = _key().save(tmp_path / "k.key", passphrase="correct horse")
    assert b"zorvik" not in path.read_bytes()  # nothing readable without the passphrase
    assert load_key(path, "correct horse").concept == "zorvik"
    with pytest.raises(ObliviateError, match="sealed"):
        load_key(path)
    with pytest.raises(ObliviateError, match="wrong passphrase"):
        load_key(path, "wrong")


@pytest.mark.parametrize("sealed", [False, True])
def test_tampered_key_is_refused(tmp_path, sealed):
    path = _key().save(tmp_path / "k.key", passphrase="pw" if sealed else None)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # flip one bit inside the tensor data (or the ciphertext)
    path.write_bytes(bytes(data))
    with pytest.raises(ObliviateError, match="modified"):
        load_key(path, "pw" if sealed else None)


def _forge(tmp_path, tensors, **meta):
    fields = {"format": KEY_FORMAT, "concept": "zorvik", "placement": "all", "patch_sha256": "ab" * 32,
              "content_sha256": "00" * 32, **meta}
    fields = {k: v for k, v in fields.items() if v is not None}
    path = tmp_path / "forged.key"
    path.write_bytes(st_save(tensors, metadata={"obliviate": json.dumps(fields)}))
    return path


@pytest.mark.parametrize("tensors, meta, message", [
    ({"keys": torch.zeros(4, 8), "values": torch.zeros(4, 6)}, {}, "one shape"),
    ({"keys": torch.zeros(8), "values": torch.zeros(8)}, {}, "two float matrices"),
    ({"keys": torch.zeros(4, 8)}, {}, "expected keys and values"),
    ({"keys": torch.zeros(4, 8), "values": torch.zeros(4, 8)}, {"concept": None}, "no 'concept' field"),
    ({"keys": torch.zeros(4, 8), "values": torch.zeros(4, 8)}, {"placement": "everywhere"}, "unknown placement"),
    ({"keys": torch.zeros(4, 8), "values": torch.zeros(4, 8)}, {"patch_sha256": "x"}, "not a SHA-256"),
    ({"lora_down.unet.a": torch.zeros(2, 8)}, {"placement": "lora"}, "matching lora_down"),
    ({"keys": torch.zeros(4, 8), "values": torch.zeros(4, 8)}, {"placement": "lora"}, "matching lora_down"),
])
def test_malformed_keys_are_one_line_errors(tmp_path, tensors, meta, message):
    with pytest.raises(ObliviateError, match=message) as exc:
        load_key(_forge(tmp_path, tensors, **meta))
    assert "\n" not in str(exc.value)


def test_garbage_and_foreign_keys_are_refused(tmp_path, pipe):
    (tmp_path / "junk.key").write_bytes(b"\x00" * 40)
    with pytest.raises(ObliviateError, match="not an obliviate key"):
        load_key(tmp_path / "junk.key")
    with pytest.raises(ObliviateError, match="does not exist"):
        load_key(tmp_path / "missing.key")
    with pytest.raises(ObliviateError, match="another public patch"):
        check_key_fits(_key(), ["cd" * 32], "k.key")
    with pytest.raises(ObliviateError, match="8 wide; this model's text states are 64 wide"):
        check_key_width(_key(), pipe)
    small = _lora_key(pipe)
    small.tensors = {n.replace("to_k", "to_q"): t[:, :3] if "down" in n else t for n, t in small.tensors.items()}
    with pytest.raises(ObliviateError, match="does not fit this model"):
        check_key_width(small, pipe)
