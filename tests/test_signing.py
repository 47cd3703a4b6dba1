"""Provenance: Ed25519 signatures over patch and key files; tampering, another publisher's key and a missing
signature are each refused in one line, before any model is loaded."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from obliviate import ObliviateError, Patch
from obliviate.signing import new_identity, sign_file, signature_path, verify_file

_PROBE = ("import sys; from obliviate.cli import main; rc = main(sys.argv[1:]); "
          "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr); sys.exit(rc)")


def _cli(*args):
    return subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture
def signed(tmp_path):
    patch = Patch({"delta.unet.w": torch.ones(3)}, {"method": "test", "concepts": ["zorvik"]}).save(
        tmp_path / "p.safetensors")
    private, public = new_identity(tmp_path / "me")
    sign_file(patch, private)
    return patch, private, public


def test_identity_private_key_is_owner_only_and_never_replaced(signed, tmp_path):
    _, private, public = signed
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and "PRIVATE" not in public.read_text()
    with pytest.raises(ObliviateError, match="refusing to replace"):
        new_identity(tmp_path / "me")


def test_signature_checks_file_publisher_and_presence(signed, tmp_path):
    patch, _, public = signed
    assert len(verify_file(patch, public)) == 16
    _, other = new_identity(tmp_path / "someone-else")
    with pytest.raises(ObliviateError, match="signed by key .*, not by"):
        verify_file(patch, other)
    data = bytearray(patch.read_bytes())
    data[-1] ^= 1  # one bit of the tensors
    patch.write_bytes(bytes(data))
    with pytest.raises(ObliviateError, match="changed after signing"):
        verify_file(patch, public)
    signature_path(patch).write_text("{}")
    with pytest.raises(ObliviateError, match="not an obliviate signature"):
        verify_file(patch, public)
    signature_path(patch).unlink()
    with pytest.raises(ObliviateError, match="is not signed"):
        verify_file(patch, public)


def test_metadata_is_covered(signed):
    """Changing the JSON metadata (e.g. the concepts a patch claims) breaks the signature too."""
    patch, _, public = signed
    data = patch.read_bytes()
    patch.write_bytes(data.replace(b'zorvik', b'maelin'))
    assert patch.read_bytes() != data
    with pytest.raises(ObliviateError, match="changed after signing"):
        verify_file(patch, public)


def test_cli_sign_verify_and_require_signature(tmp_path):
    patch = Patch({"delta.unet.w": torch.ones(3)}, {"method": "test", "concepts": ["zorvik"]}).save(
        tmp_path / "p.safetensors")
    res = _cli("sign", str(patch), "--new-identity", str(tmp_path / "id"), "--json", "-")
    assert res.returncode == 0 and json.loads(res.stdout)["signatures"] == [str(patch) + ".sig"], res.stderr
    public = str(tmp_path / "id" / "obliviate-signing.pub")
    assert _cli("verify", str(patch), "--public-key", public).returncode == 0
    unsigned = Patch({"delta.unet.w": torch.ones(3)}, {"method": "test"}).save(tmp_path / "u.safetensors")
    res = _cli("verify", str(patch), str(unsigned), "--public-key", public)
    assert res.returncode == 1 and "u.safetensors: NOT VERIFIED" in res.stderr
    res = _cli("eval", "--patch", str(unsigned), "--require-signature", public)
    errors = [line for line in res.stderr.splitlines() if line not in ("TORCH", "NO-TORCH")]
    assert res.returncode == 2 and errors == [f"obliviate: error: {unsigned} is not signed (no u.safetensors.sig "
                                              "beside it)"], res.stderr
    assert "NO-TORCH" in res.stderr  # refused before torch, let alone the model
    res = _cli("sign", str(patch))
    assert res.returncode == 2 and "--private-key" in res.stderr
