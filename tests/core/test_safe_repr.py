"""Every type that holds key material or a secret value prints none of it, however printed."""

from __future__ import annotations

import base64
import copy
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from keyfob import crypto
from keyfob.crypto import Keyring, MasterKey, SystemKeys, master
from keyfob.crypto._aead import Aead, Signer
from keyfob.profiles import Profile
from keyfob.proxy import headers
from keyfob.proxy.inject import Upstream
from keyfob.proxy.scrub import Scrubber
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.store import KeyMeta, VersionRow
from keyfob.vault import Initialised, ProxyRequest, ProxyUse
from tests.conftest import CANARY

RAW_KEY = bytes(range(32))
SEED = bytes(range(100, 132))
TOKEN = "kfo_" + "T0k3n" * 8 + "abc"


@dataclass(frozen=True)
class Case:
    """An object and the texts that must never appear when it is printed."""

    thing: object
    secrets: tuple[str, ...]


def key_forms(raw: bytes) -> tuple[str, ...]:
    """The ways raw key bytes could leak into text."""
    return (raw.hex(), base64.b64encode(raw).decode(), repr(raw)[2:-1], str(list(raw))[1:-1])


def make_secret() -> Case:
    return Case(Secret(CANARY), (CANARY,))


def make_master_key() -> Case:
    return Case(MasterKey(Secret(RAW_KEY)), key_forms(RAW_KEY))


def make_aead() -> Case:
    return Case(Aead(RAW_KEY), key_forms(RAW_KEY))


def make_signer() -> Case:
    return Case(Signer(SEED), key_forms(SEED))


def make_system_keys() -> Case:
    return Case(SystemKeys(RAW_KEY, SEED, SEED), key_forms(RAW_KEY) + key_forms(SEED))


def make_keyring() -> Case:
    ring, _, _ = Keyring.create(MasterKey(Secret(RAW_KEY)))
    return Case(ring, key_forms(RAW_KEY))


def make_sealed() -> Case:
    ring, _, _ = Keyring.create(MasterKey(Secret(RAW_KEY)))
    sealed = crypto.seal(ring, CANARY.encode(), set_id="set", version=1)
    return Case(sealed, (CANARY, *key_forms(sealed.ciphertext), *key_forms(sealed.wrapped_dek)))


def make_version_row() -> Case:
    ciphertext, wrapped = b"\x01" + SEED, b"\x01\x00\x00\x00\x01" + RAW_KEY
    row = VersionRow(
        set_id="abc",
        version=3,
        created_at="2026-01-01T00:00:00.000000Z",
        actor="operator:x",
        reason="update",
        rollback_of=None,
        keys=(KeyMeta("OPENAI_API_KEY", "hmac-sha256:0011223344556677", 3),),
        kek_term=1,
        wrapped_dek=wrapped,
        ciphertext=ciphertext,
    )
    return Case(row, key_forms(ciphertext) + key_forms(wrapped))


def make_settings() -> Case:
    key = master.encode(RAW_KEY)
    return Case(Settings(master_key=SecretStr(key), token=SecretStr(TOKEN)), (key, TOKEN))


def make_initialised() -> Case:
    return Case(Initialised(operator_token=Secret(TOKEN), token_id="t1"), (TOKEN,))


def make_proxy_request() -> Case:
    lease = "kfl_" + "L3as3" * 8 + "abc"
    request = ProxyRequest(lease, "openai/prod/default", "GET", "/v1", (), "rid", None, "/proxy")
    return Case(request, (lease,))


def make_incoming() -> Case:
    lease = "kfl_" + "L3as3" * 8 + "abc"
    raw = [(b"authorization", f"Bearer {lease}".encode()), (b"x-api-key", CANARY.encode())]
    return Case(headers.read_request(raw, max_bytes=4096, max_body=4096), (lease,))


def make_upstream() -> Case:
    upstream = Upstream("GET", "https", "api.example.com", 443, "/v1", f"key={CANARY}")
    upstream.headers.append(("authorization", f"Bearer {CANARY}"))
    return Case(upstream, (CANARY,))


def make_proxy_use() -> Case:
    profile = Profile.model_validate(
        {
            "base_url": "https://api.example.com",
            "hosts": ["api.example.com"],
            "inject": {"kind": "bearer", "key": "API_KEY"},
        }
    )
    request = make_proxy_request().thing
    assert isinstance(request, ProxyRequest)
    values = {"API_KEY": Secret(CANARY)}
    use = ProxyUse("lease", "agent", "set", "p/e/n", 1, profile, ("API_KEY",), values, request, 0)
    return Case(use, (CANARY, request.token or ""))


def make_scrubber() -> Case:
    return Case(Scrubber.for_values([CANARY]), (CANARY, base64.b64encode(CANARY.encode()).decode()))


FACTORIES: list[Callable[[], Case]] = [
    make_secret,
    make_master_key,
    make_aead,
    make_signer,
    make_system_keys,
    make_keyring,
    make_sealed,
    make_version_row,
    make_settings,
    make_initialised,
    make_proxy_request,
    make_incoming,
    make_upstream,
    make_proxy_use,
    make_scrubber,
]


def renderings(thing: object) -> dict[str, str]:
    return {
        "repr": repr(thing),
        "str": str(thing),
        "f-string": f"{thing}",
        "f-string !r": f"{thing!r}",
        "f-string spec": f"{thing:>10}" if isinstance(thing, Secret) else f"{thing!s:>10}",
        "in a list": str([thing]),
        "in a dict": str({"value": thing}),
    }


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__.removeprefix("make_"))
def test_printing_shows_no_secret(factory: Callable[[], Case]):
    case = factory()

    for how, text in renderings(case.thing).items():
        for secret in case.secrets:
            assert secret not in text, f"{how} of {type(case.thing).__name__} shows a secret"


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__.removeprefix("make_"))
def test_logging_shows_no_secret(factory: Callable[[], Case], caplog: pytest.LogCaptureFixture):
    case = factory()
    log = logging.getLogger("keyfob.test")

    with caplog.at_level(logging.DEBUG, logger="keyfob.test"):
        log.info("as %%r: %r", case.thing)
        log.info("as %%s: %s", case.thing)
        log.info("as args: %s", (case.thing, case.thing))

    assert len(caplog.records) == 3
    for secret in case.secrets:
        assert secret not in caplog.text


def test_secret_still_hands_out_its_value_on_request():
    secret = Secret(CANARY)

    assert repr(secret) == str(secret) == "Secret('**********')"

    assert secret.reveal() == CANARY
    assert secret == Secret(CANARY)
    assert secret != Secret("other")


def test_a_secret_cannot_be_pickled_or_copied():
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(Secret(CANARY))
    with pytest.raises(TypeError):
        copy.copy(Secret(CANARY))


def test_a_secret_inside_a_pickled_structure_fails_the_whole_pickle():
    with pytest.raises(TypeError):
        pickle.dumps({"entries": {"OPENAI_API_KEY": Secret(CANARY)}})
