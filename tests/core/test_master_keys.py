"""Choosing the master key provider: what each setting combination opens or refuses.

The PKCS#11 provider itself is tested against SoftHSM2 in tests/cli/test_hsm.py; these
refusals come before any token is asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from keyfob.crypto import master
from keyfob.errors import ConfigurationError
from keyfob.settings import Settings
from keyfob.vault.master_keys import open_master_key, provider_name

PIN = "pin-canary-5b7d9f1e3a"


def pkcs11(tmp_path: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "master_key_provider": "pkcs11",
        "pkcs11_module": tmp_path / "libtoken.so",
        "pkcs11_token_label": "keyfob",
        "pkcs11_pin": SecretStr(PIN),
    }
    values.update(extra)
    return Settings(**values)


def test_the_default_is_the_variable_if_set_else_the_file(tmp_path: Path):
    key = master.encode(master.generate().reveal())

    assert provider_name(Settings(data_dir=tmp_path)) == "file"
    assert provider_name(Settings(data_dir=tmp_path, master_key=SecretStr(key))) == "env"
    opened = open_master_key(Settings(data_dir=tmp_path, master_key=SecretStr(key)), create=True)
    assert opened is not None
    assert opened.describe() == {"provider": "env"}
    assert not (tmp_path / "master.key").exists()


def test_the_file_provider_names_its_file(tmp_path: Path):
    opened = open_master_key(Settings(data_dir=tmp_path), create=True)

    assert opened is not None
    assert opened.describe() == {"provider": "file", "path": str(tmp_path / "master.key")}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"master_key_provider": "env"}, "KEYFOB_MASTER_KEY_PROVIDER=env needs KEYFOB_MASTER_KEY"),
        (
            {"master_key_provider": "file", "master_key": SecretStr("x")},
            "KEYFOB_MASTER_KEY is set but KEYFOB_MASTER_KEY_PROVIDER=file",
        ),
    ],
    ids=["env-without-key", "file-and-key"],
)
def test_contradicting_local_settings_are_refused(
    tmp_path: Path, settings: dict[str, Any], message: str
):
    with pytest.raises(ConfigurationError, match=message):
        open_master_key(Settings(data_dir=tmp_path, **settings), create=True)

    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pkcs11_module": None}, "needs KEYFOB_PKCS11_MODULE and KEYFOB_PKCS11_TOKEN_LABEL"),
        ({"pkcs11_token_label": None}, "needs KEYFOB_PKCS11_MODULE and KEYFOB_PKCS11_TOKEN_LABEL"),
        ({"pkcs11_pin": None}, "exactly one of KEYFOB_PKCS11_PIN and KEYFOB_PKCS11_PIN_FILE"),
        ({"pkcs11_pin_file": Path("/pin")}, "exactly one of"),
        ({"master_key": SecretStr("x")}, "KEYFOB_MASTER_KEY is set but"),
        ({}, "KEYFOB_PKCS11_MODULE .*libtoken.so does not exist"),
    ],
    ids=["no-module", "no-token", "no-pin", "two-pins", "also-a-key", "module-missing"],
)
def test_incomplete_pkcs11_settings_are_named(tmp_path: Path, extra: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message) as caught:
        open_master_key(pkcs11(tmp_path, **extra), create=True)

    assert PIN not in str(caught.value)
    assert not (tmp_path / "master.key").exists()


def test_a_module_that_is_not_a_pkcs11_library_is_named(tmp_path: Path):
    pytest.importorskip("pkcs11")
    (tmp_path / "libtoken.so").write_text("not a library")

    with pytest.raises(ConfigurationError, match="could not be loaded as a PKCS#11 library"):
        open_master_key(pkcs11(tmp_path), create=True)


def test_a_pin_file_others_can_read_is_refused(tmp_path: Path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o644)

    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        open_master_key(pkcs11(tmp_path, pkcs11_pin=None, pkcs11_pin_file=pin_file), create=True)

    assert PIN not in str(caught.value)


@pytest.mark.parametrize(("text", "message"), [(None, "does not exist"), ("\n", "is empty")])
def test_a_missing_or_empty_pin_file_is_named(tmp_path: Path, text: str | None, message: str):
    pin_file = tmp_path / "pin"
    if text is not None:
        pin_file.write_text(text)
        pin_file.chmod(0o600)

    with pytest.raises(ConfigurationError, match=f"KEYFOB_PKCS11_PIN_FILE .* {message}"):
        open_master_key(pkcs11(tmp_path, pkcs11_pin=None, pkcs11_pin_file=pin_file), create=True)
