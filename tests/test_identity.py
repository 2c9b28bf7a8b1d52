"""Node keys: created encrypted, loaded back, wrong passphrase refused, never printed."""

from __future__ import annotations

import stat

import pytest

from shardnet.identity import Identity, IdentityError, recover_text_signer


def test_create_and_load_round_trip(tmp_path):
    created = Identity.create(tmp_path / "k", "secret", kdf_n=2**10)
    loaded = Identity.load(tmp_path / "k", "secret")
    assert loaded.address == created.address and loaded.peer_key == created.peer_key
    assert len(loaded.peer_key) == 32
    for f in (tmp_path / "k").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert b"PRIVATE KEY-----" not in f.read_bytes() or b"ENCRYPTED" in f.read_bytes()


def test_wrong_passphrase_is_refused(tmp_path):
    Identity.create(tmp_path, "secret", kdf_n=2**10)
    with pytest.raises(IdentityError, match="wrong passphrase"):
        Identity.load(tmp_path, "nope")


def test_existing_keys_are_not_overwritten(tmp_path):
    Identity.create(tmp_path, "secret", kdf_n=2**10)
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        Identity.create(tmp_path, "secret", kdf_n=2**10)


def test_repr_shows_no_private_key(tmp_path):
    identity = Identity.create(tmp_path, "secret", kdf_n=2**10)
    assert identity.account.key.hex() not in repr(identity)


def test_signature_recovers_the_address(tmp_path):
    identity = Identity.create(tmp_path, "secret", kdf_n=2**10)
    assert recover_text_signer("hello", identity.sign_text("hello")) == identity.address
    assert recover_text_signer("other", identity.sign_text("hello")) != identity.address
