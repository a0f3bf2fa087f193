"""Choosing the master key provider from the settings: file, environment or PKCS#11."""

from __future__ import annotations

import stat
from pathlib import Path

from keyfob.crypto import MasterKey, MasterKeyProvider, master
from keyfob.errors import ConfigurationError
from keyfob.secret import Secret
from keyfob.settings import Settings


def provider_name(settings: Settings) -> str:
    """The configured provider: explicit, else ``env`` with ``KEYFOB_MASTER_KEY``, else ``file``."""
    if settings.master_key_provider is not None:
        return settings.master_key_provider
    return "env" if settings.master_key is not None else "file"


def open_master_key(settings: Settings, *, create: bool) -> MasterKeyProvider | None:
    """The provider, ready to wrap; ``None`` if its key does not exist and ``create`` is off.

    ``create`` makes what is missing: the key file, or the key on the PKCS#11 token.
    """
    name = provider_name(settings)
    if name == "pkcs11":
        return _pkcs11(settings, create=create)
    if name == "env":
        if settings.master_key is None:
            raise ConfigurationError("KEYFOB_MASTER_KEY_PROVIDER=env needs KEYFOB_MASTER_KEY")
        return MasterKey(master.decode(settings.master_key.get_secret_value()), {"provider": "env"})
    if settings.master_key is not None:
        raise ConfigurationError(
            "KEYFOB_MASTER_KEY is set but KEYFOB_MASTER_KEY_PROVIDER=file: unset one of them"
        )
    path = settings.resolved_master_key_file
    source = {"provider": "file", "path": str(path.resolve())}
    if path.exists():
        return MasterKey(master.read_file(path), source)
    if not create:
        return None
    key = master.generate()
    master.write_file(path, key)
    return MasterKey(key, source)


def missing_key_hint(settings: Settings) -> str:
    """How to supply the key of a vault that has a keyring but no key was found."""
    return f"set KEYFOB_MASTER_KEY or put the key file at {settings.resolved_master_key_file}"


def _pkcs11(settings: Settings, *, create: bool) -> MasterKeyProvider:
    if settings.master_key is not None:
        raise ConfigurationError(
            "KEYFOB_MASTER_KEY is set but KEYFOB_MASTER_KEY_PROVIDER=pkcs11: unset one of them"
        )
    if settings.pkcs11_module is None or not settings.pkcs11_token_label:
        raise ConfigurationError(
            "KEYFOB_MASTER_KEY_PROVIDER=pkcs11 needs KEYFOB_PKCS11_MODULE and "
            "KEYFOB_PKCS11_TOKEN_LABEL"
        )
    pin = _pin(settings)
    try:
        # Imported here only: a vault on a file or environment key never loads pkcs11.
        from keyfob.crypto.hsm import Pkcs11MasterKey
    except ImportError:
        raise ConfigurationError(
            "KEYFOB_MASTER_KEY_PROVIDER=pkcs11 needs python-pkcs11: pip install 'keyfob[hsm]'"
        ) from None
    return Pkcs11MasterKey.open(
        settings.pkcs11_module,
        settings.pkcs11_token_label,
        settings.pkcs11_key_label,
        pin,
        create=create,
    )


def _pin(settings: Settings) -> Secret[str]:
    if (settings.pkcs11_pin is None) == (settings.pkcs11_pin_file is None):
        raise ConfigurationError(
            "KEYFOB_MASTER_KEY_PROVIDER=pkcs11 needs exactly one of KEYFOB_PKCS11_PIN "
            "and KEYFOB_PKCS11_PIN_FILE"
        )
    if settings.pkcs11_pin is not None:
        return Secret(settings.pkcs11_pin.get_secret_value())
    assert settings.pkcs11_pin_file is not None
    return _read_pin(settings.pkcs11_pin_file)


def _read_pin(path: Path) -> Secret[str]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"KEYFOB_PKCS11_PIN_FILE {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"KEYFOB_PKCS11_PIN_FILE {path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    pin = path.read_text().rstrip("\r\n")
    if not pin:
        raise ConfigurationError(f"KEYFOB_PKCS11_PIN_FILE {path} is empty")
    return Secret(pin)
