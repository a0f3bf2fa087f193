"""Envelope encryption, the keyring and the master key file (Hypothesis for the recipes)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keyfob import crypto
from keyfob.crypto import Keyring, MasterKey, Sealed, WrappedKek, master
from keyfob.crypto._aead import aad
from keyfob.errors import ConfigurationError, DecryptionFailed
from keyfob.secret import Secret

GENERIC = DecryptionFailed.title


def make_ring() -> tuple[Keyring, MasterKey, WrappedKek, bytes]:
    """A fresh keyring (term 1) with its master key and wrapped forms."""
    key = MasterKey(master.generate())
    ring, kek, system = Keyring.create(key)
    return ring, key, kek, system


RING, _, _, _ = make_ring()
OTHER_RING, _, _, _ = make_ring()

# No deadline: a loaded two-core CI machine must not turn a slow example into a failure.
PROPERTY = settings(deadline=None)
plaintexts = st.binary(max_size=2048)
set_ids = st.text(min_size=1, max_size=40)
versions = st.integers(min_value=1, max_value=2**31)


def assert_opaque_failure(ring: Keyring, sealed: Sealed, set_id: str, version: int) -> None:
    """Opening fails with exactly ``DecryptionFailed`` and its one generic message."""
    with pytest.raises(DecryptionFailed) as caught:
        crypto.open(ring, sealed, set_id=set_id, version=version)
    assert type(caught.value) is DecryptionFailed
    assert str(caught.value) == GENERIC
    assert caught.value.extra == {}


@PROPERTY
@given(plaintext=plaintexts, set_id=set_ids, version=versions)
def test_seal_then_open_round_trips(plaintext: bytes, set_id: str, version: int):
    sealed = crypto.seal(RING, plaintext, set_id=set_id, version=version)

    assert crypto.open(RING, sealed, set_id=set_id, version=version) == plaintext
    assert sealed.term == RING.active_term == crypto.term_of(sealed.wrapped_dek)
    if len(plaintext) >= 8:
        assert plaintext not in sealed.ciphertext
        assert plaintext not in sealed.wrapped_dek


def test_sealing_twice_gives_different_ciphertext():
    one = crypto.seal(RING, b"same value", set_id="s", version=1)
    two = crypto.seal(RING, b"same value", set_id="s", version=1)

    assert one.ciphertext != two.ciphertext
    assert one.wrapped_dek != two.wrapped_dek


@PROPERTY
@given(plaintext=plaintexts, set_id=set_ids, other=set_ids, version=versions)
def test_open_under_another_set_id_fails(plaintext: bytes, set_id: str, other: str, version: int):
    assume(other != set_id)
    sealed = crypto.seal(RING, plaintext, set_id=set_id, version=version)

    assert_opaque_failure(RING, sealed, other, version)


@PROPERTY
@given(plaintext=plaintexts, set_id=set_ids, version=versions, other=versions)
def test_open_under_another_version_fails(plaintext: bytes, set_id: str, version: int, other: int):
    assume(other != version)
    sealed = crypto.seal(RING, plaintext, set_id=set_id, version=version)

    assert_opaque_failure(RING, sealed, set_id, other)


@PROPERTY
@given(plaintext=plaintexts, position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_ciphertext_bit_anywhere_fails(plaintext: bytes, position: int, bit: int):
    sealed = crypto.seal(RING, plaintext, set_id="set", version=1)
    body = bytearray(sealed.ciphertext)
    body[position % len(body)] ^= 1 << bit

    assert_opaque_failure(RING, Sealed(sealed.term, sealed.wrapped_dek, bytes(body)), "set", 1)


@PROPERTY
@given(plaintext=plaintexts, position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_wrapped_dek_bit_anywhere_fails(plaintext: bytes, position: int, bit: int):
    sealed = crypto.seal(RING, plaintext, set_id="set", version=1)
    wrapped = bytearray(sealed.wrapped_dek)
    wrapped[position % len(wrapped)] ^= 1 << bit

    assert_opaque_failure(RING, Sealed(sealed.term, bytes(wrapped), sealed.ciphertext), "set", 1)


@PROPERTY
@given(plaintext=plaintexts, data=st.data())
def test_a_truncated_blob_fails(plaintext: bytes, data: st.DataObject):
    sealed = crypto.seal(RING, plaintext, set_id="set", version=1)
    which = data.draw(st.sampled_from(["ciphertext", "wrapped_dek"]))
    blob = getattr(sealed, which)
    cut = blob[: data.draw(st.integers(0, len(blob) - 1))]
    parts = {"ciphertext": sealed.ciphertext, "wrapped_dek": sealed.wrapped_dek, which: cut}

    assert_opaque_failure(RING, Sealed(sealed.term, **parts), "set", 1)


@PROPERTY
@given(plaintext=plaintexts)
def test_a_blob_from_another_keyring_fails(plaintext: bytes):
    """Same term number, different KEK: the other vault's data never opens here."""
    sealed = crypto.seal(OTHER_RING, plaintext, set_id="set", version=1)

    assert sealed.term == RING.active_term
    assert_opaque_failure(RING, sealed, "set", 1)


def test_a_term_the_keyring_does_not_hold_fails():
    ring, *_ = make_ring()
    ring.new_term(2)
    sealed = crypto.seal(ring, b"value", set_id="set", version=1)
    ring.forget(2)

    assert sealed.term == 2
    assert_opaque_failure(ring, sealed, "set", 1)


def test_a_wrapped_dek_relabelled_to_another_held_term_fails():
    ring, *_ = make_ring()
    sealed = crypto.seal(ring, b"value", set_id="set", version=1)
    ring.new_term(2)
    relabelled = bytes([sealed.wrapped_dek[0]]) + (2).to_bytes(4, "big") + sealed.wrapped_dek[5:]

    assert crypto.term_of(relabelled) == 2
    assert_opaque_failure(ring, Sealed(2, relabelled, sealed.ciphertext), "set", 1)


def test_swapping_wrapped_deks_between_versions_fails():
    one = crypto.seal(RING, b"version one", set_id="set", version=1)
    two = crypto.seal(RING, b"version two", set_id="set", version=2)

    assert_opaque_failure(RING, Sealed(one.term, two.wrapped_dek, one.ciphertext), "set", 1)
    assert_opaque_failure(RING, Sealed(one.term, one.wrapped_dek, two.ciphertext), "set", 1)
    assert_opaque_failure(RING, two, "set", 1)


@settings(max_examples=25, deadline=None)
@given(plaintext=plaintexts, set_id=set_ids, version=versions)
def test_rewrap_moves_the_term_and_keeps_the_plaintext(plaintext: bytes, set_id: str, version: int):
    ring, *_ = make_ring()
    sealed = crypto.seal(ring, plaintext, set_id=set_id, version=version)
    ring.new_term(2)

    term, wrapped = crypto.rewrap(ring, sealed.wrapped_dek, set_id=set_id, version=version)
    ring.forget(1)

    assert term == 2 == crypto.term_of(wrapped)
    moved = Sealed(term, wrapped, sealed.ciphertext)
    assert crypto.open(ring, moved, set_id=set_id, version=version) == plaintext
    assert_opaque_failure(ring, sealed, set_id, version)


def test_rewrap_of_a_foreign_wrapped_dek_fails():
    sealed = crypto.seal(OTHER_RING, b"value", set_id="set", version=1)

    with pytest.raises(DecryptionFailed):
        crypto.rewrap(RING, sealed.wrapped_dek, set_id="set", version=1)


def test_keyring_reloads_with_its_master_key():
    ring, key, kek, system = make_ring()
    sealed = crypto.seal(ring, b"value", set_id="set", version=1)

    loaded = Keyring.load(key, [kek], system)

    assert loaded.terms == [1]
    assert crypto.open(loaded, sealed, set_id="set", version=1) == b"value"
    assert loaded.system.fingerprint("x") == ring.system.fingerprint("x")


def test_keyring_load_with_a_wrong_master_key_is_a_clear_configuration_error():
    _, _, kek, system = make_ring()
    wrong = MasterKey(master.generate())

    with pytest.raises(ConfigurationError) as caught:
        Keyring.load(wrong, [kek], system)

    message = str(caught.value)
    assert "master key" in message
    assert "KEYFOB_MASTER_KEY" in message


def test_keyring_load_refuses_a_kek_filed_under_another_term():
    _, key, kek, system = make_ring()

    with pytest.raises(ConfigurationError, match="KEK term 2") as caught:
        Keyring.load(key, [WrappedKek(2, kek.wrapped)], system)

    assert "KEYFOB_MASTER_KEY" not in str(caught.value)


def test_aad_length_prefixes_keep_parts_apart():
    assert aad(b"l", "ab", "c") != aad(b"l", "a", "bc")
    assert aad(b"l", "abc") != aad(b"l", "ab", "c")
    assert aad(b"l", "set", 1) != aad(b"l", "set", 2)


parts = st.lists(st.one_of(st.text(max_size=8), st.binary(max_size=8)), max_size=4)


@PROPERTY
@given(a=parts, b=parts)
def test_aad_is_injective(a: list[str | bytes], b: list[str | bytes]):
    """Distinct part lists never share associated data (str and its UTF-8 bytes are one part)."""
    raw_a = [p.encode() if isinstance(p, str) else p for p in a]
    raw_b = [p.encode() if isinstance(p, str) else p for p in b]

    assert (aad(b"label", *a) == aad(b"label", *b)) == (raw_a == raw_b)


@PROPERTY
@given(a=st.tuples(set_ids, versions), b=st.tuples(set_ids, versions))
def test_aad_of_set_and_version_is_injective(a: tuple[str, int], b: tuple[str, int]):
    assert (aad(b"keyfob/data/v1", *a) == aad(b"keyfob/data/v1", *b)) == (a == b)


# -- the master key file -----------------------------------------------------------------


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "master.key"


def test_master_key_file_is_created_0600_and_reads_back(key_path: Path):
    key = master.generate()

    master.write_file(key_path, key)

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert master.read_file(key_path) == key


def test_master_key_file_is_never_overwritten(key_path: Path):
    master.write_file(key_path, master.generate())
    before = key_path.read_bytes()

    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        master.write_file(key_path, master.generate())

    assert key_path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
def test_master_key_file_readable_by_others_is_refused(key_path: Path, mode: int):
    master.write_file(key_path, master.generate())
    key_path.chmod(mode)

    with pytest.raises(ConfigurationError) as caught:
        master.read_file(key_path)

    assert f"chmod 600 {key_path}" in str(caught.value)


def test_missing_master_key_file_names_the_file(key_path: Path):
    with pytest.raises(ConfigurationError) as caught:
        master.read_file(key_path)

    assert str(key_path) in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        "",
        base64.b64encode(b"\x01" * 16).decode(),
        base64.b64encode(b"\x01" * 33).decode(),
        base64.b64encode(b"\x01" * 32).decode()[:-4],
    ],
    ids=["garbage", "empty", "16-bytes", "33-bytes", "cut"],
)
def test_bad_master_key_text_is_a_configuration_error(key_path: Path, text: str):
    key_path.parent.mkdir(parents=True)
    key_path.write_text(text)
    key_path.chmod(0o600)

    with pytest.raises(ConfigurationError) as caught:
        master.read_file(key_path)
    with pytest.raises(ConfigurationError):
        master.decode(text)

    assert "master key" in str(caught.value)
    if text:
        assert text not in str(caught.value)


def test_master_key_of_the_wrong_length_is_refused():
    with pytest.raises(ConfigurationError):
        MasterKey(Secret(b"\x00" * 31))
