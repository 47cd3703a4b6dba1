"""Key files: round trip, sealing with a passphrase, tampering and foreign keys refused."""

import pytest
import torch

from obliviate.errors import ObliviateError
from obliviate.keys import Key, check_key_fits, load_key


def _key():
    gen = torch.Generator().manual_seed(0)
    return Key("zorvik", torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen), "all", "ab" * 32)


def test_plain_round_trip(tmp_path):
    key = _key()
    loaded = load_key(key.save(tmp_path / "k.key"))
    assert loaded.concept == "zorvik" and loaded.placement == "all" and loaded.patch_sha256 == key.patch_sha256
    assert torch.equal(loaded.keys, key.keys) and torch.equal(loaded.values, key.values)


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


def test_garbage_and_foreign_keys_are_refused(tmp_path):
    (tmp_path / "junk.key").write_bytes(b"\x00" * 40)
    with pytest.raises(ObliviateError, match="not an obliviate key"):
        load_key(tmp_path / "junk.key")
    with pytest.raises(ObliviateError, match="does not exist"):
        load_key(tmp_path / "missing.key")
    with pytest.raises(ObliviateError, match="another public patch"):
        check_key_fits(_key(), ["cd" * 32], "k.key")
