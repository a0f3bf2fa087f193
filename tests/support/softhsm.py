"""A SoftHSM2 token for the PKCS#11 master key provider's tests.

SoftHSM2 reads its configuration (``SOFTHSM2_CONF``) and lists its tokens once, when the
library is first loaded in a process; so one token directory and one token serve a whole
test process (each test takes its own key label), and the variable is set before any
test loads the library. Child processes inherit it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyfob.settings import Settings
from tests.support.hashing import FAST_HASHING

MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "keyfob-test"


@dataclass(frozen=True)
class SoftHsm:
    module: Path
    conf: Path
    token_label: str
    pin: str  # a canary as well: no output, log or answer may hold it

    def settings(self, data_dir: Path, key_label: str, **extra: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "master_key_provider": "pkcs11",
            "pkcs11_module": self.module,
            "pkcs11_token_label": self.token_label,
            "pkcs11_key_label": key_label,
            "pkcs11_pin": self.pin,
            **FAST_HASHING,
        }
        values.update(extra)
        return Settings(**values)

    def env(self, data_dir: Path, key_label: str, pin_file: Path) -> dict[str, str]:
        """The environment of a ``keyfob`` child process on this token (PIN from a file)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
        env.update(
            {
                "SOFTHSM2_CONF": str(self.conf),
                "KEYFOB_DATA_DIR": str(data_dir),
                "KEYFOB_MASTER_KEY_PROVIDER": "pkcs11",
                "KEYFOB_PKCS11_MODULE": str(self.module),
                "KEYFOB_PKCS11_TOKEN_LABEL": self.token_label,
                "KEYFOB_PKCS11_KEY_LABEL": key_label,
                "KEYFOB_PKCS11_PIN_FILE": str(pin_file),
                **{f"KEYFOB_{k.upper()}": str(v) for k, v in FAST_HASHING.items()},
            }
        )
        return env


def _unavailable(reason: str) -> None:
    # CI installs softhsm2 and the hsm extra (.ci/run): there a missing piece is a failure.
    if os.environ.get("CI"):
        pytest.fail(f"SoftHSM2 is required in CI: {reason}")
    pytest.skip(f"SoftHSM2 not available: {reason} (apt-get install softhsm2)")


def start_softhsm(base: Path) -> Iterator[SoftHsm]:
    """A SoftHSM2 config and one initialised token in ``base``; ``SOFTHSM2_CONF`` set meanwhile."""
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        _unavailable("python-pkcs11 is not installed (pip install 'keyfob[hsm]')")
    util = shutil.which("softhsm2-util")
    if util is None:
        _unavailable("softhsm2-util is not on PATH")
    module = next((Path(m) for m in MODULES if Path(m).is_file()), None)
    if module is None:
        _unavailable(f"libsofthsm2.so is in none of {', '.join(MODULES)}")
    assert util is not None
    assert module is not None
    tokens = base / "tokens"
    tokens.mkdir(parents=True, mode=0o700)
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin = "pin-canary-" + secrets.token_hex(8)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    init = [util, "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", pin]
    subprocess.run(
        [*init, "--so-pin", secrets.token_hex(8)],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        yield SoftHsm(module, conf, TOKEN_LABEL, pin)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
