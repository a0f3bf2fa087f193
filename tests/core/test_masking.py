"""Masking by construction: every type that holds a secret prints none of it, however printed.

The types are found, not listed: every class of every keyfob module is inspected, and one
that holds a ``Secret``, a token, a lease or key material must print through ``Masked``
(or, for a pydantic model, pydantic's ``SecretStr`` / ``Field(repr=False)``). Each is then
printed every way a log line, an error message or a traceback prints it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import importlib
import inspect
import logging
import pickle
import pkgutil
import re
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, SecretStr

import keyfob
from keyfob import crypto, sdk
from keyfob.api.models import SetCreate, SetUpdate
from keyfob.api.users import PasswordChange, UserCreate
from keyfob.app.audit_sinks import WebhookSink
from keyfob.cli.client import KeyfobClient
from keyfob.crypto import Keyring, MasterKey, SystemKeys, master
from keyfob.crypto._aead import Aead, Signer
from keyfob.crypto.hsm import Pkcs11MasterKey
from keyfob.profiles import Profile
from keyfob.proxy import headers
from keyfob.proxy.inject import Upstream
from keyfob.proxy.scrub import Scrubber, StreamScrub
from keyfob.sdk import wire as sdk_wire
from keyfob.secret import SECRET, Masked, Secret, is_secret_field
from keyfob.settings import Settings
from keyfob.store import KeyMeta, VersionRow
from keyfob.vault import Initialised, ProxyRequest, ProxyUse
from tests.conftest import CANARY

RAW_KEY = bytes(range(32))
SEED = bytes(range(100, 132))
TOKEN = "kfo_" + "T0k3n" * 8 + "abc"
LEASE = "kfl_" + "L3as3" * 8 + "abc"
AGENT = "kfa_" + "Ag3nt" * 8 + "abc"

# -- finding the types ---------------------------------------------------------------------

# Modules that cannot be imported on their own: the CLI entry point runs the CLI, and
# Alembic's env.py needs a migration in progress. Neither defines a type.
UNIMPORTABLE = re.compile(r"^keyfob\.(cli\.__main__|store\.migrations(\..*)?)$")

# A member with one of these names, of a plain type (text, bytes, a dict or list of them)
# or of no declared type, holds what it is named for.
SECRET_NAME = re.compile(
    r"(?:^|_)(token|lease|password|password_hash|passphrase|secret|seed|dek|ciphertext|key"
    r"|wrapped|credentials?|entries|values)$"
)
PLAIN_WORDS = frozenset(
    {"str", "bytes", "bytearray", "None", "Any", "dict", "list", "tuple", "Mapping", "Sequence"}
)

# Members that match by name but hold no secret, each with the reason.
NOT_SECRET: dict[str, str] = {
    "keyfob.profiles.model.Bearer": "key names a set key ('OPENAI_API_KEY'), not its value",
    "keyfob.profiles.model.Query": "key names a set key, not its value",
    "keyfob.profiles.model.Basic": "username/password are templates ('{TWILIO_AUTH_TOKEN}')",
    "keyfob.profiles.model.AwsSigV4": "templates that name the set's AWS keys, not values",
    "keyfob.profiles.model.OAuth2": "client_secret/refresh_token name set keys, not values",
    "keyfob.profiles.model.GoogleServiceAccount": "key names the set key of the key file",
    "keyfob.profiles.model.GitHubApp": "private_key names the set key of the app's key",
    "keyfob.profiles.registry.Field": "key names a set key the dashboard asks for",
    "keyfob.audit.checkpoint.Checkpoint": "public_key is the public half of the signing key",
    "keyfob.vault.views.KeyStatus": "audit_public_key is the public half of the signing key",
}


def keyfob_modules() -> Iterator[types.ModuleType]:
    yield keyfob
    for info in pkgutil.walk_packages(keyfob.__path__, "keyfob."):
        if not UNIMPORTABLE.match(info.name):
            yield importlib.import_module(info.name)


def keyfob_classes() -> list[type]:
    """Every class defined in a keyfob module (as a module attribute)."""
    found: dict[str, type] = {}
    for module in keyfob_modules():
        for thing in vars(module).values():
            if inspect.isclass(thing) and thing.__module__ == module.__name__:
                found[qualified(thing)] = thing
    return sorted(found.values(), key=qualified)


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _text(annotation: object) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def members(cls: type) -> Iterator[tuple[str, str]]:
    """(name, annotation text) of fields, slots and constructor arguments; '' if undeclared."""
    # Not object, Generic or BaseModel: their members are not the type's data.
    own = [k for k in cls.__mro__ if k.__module__.split(".")[0] in ("keyfob", "tests")]
    annotated: dict[str, str] = {}
    for klass in reversed(own):
        annotated |= {n: _text(a) for n, a in inspect.get_annotations(klass).items()}
    yield from annotated.items()
    for klass in own:
        slots = vars(klass).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            yield name, annotated.get(name, "")
    for klass in own:
        init = vars(klass).get("__init__")
        if inspect.isfunction(init):
            for name, parameter in list(inspect.signature(init).parameters.items())[1:]:
                yield name, _text(parameter.annotation)


# A member of one of these types holds a secret. (A member of a Masked type needs nothing
# more: it prints masked wherever it is.)
SECRET_TYPE = re.compile(r"\b(Secret|SecretStr|SecretBytes)\b")


def holdings(cls: type) -> dict[str, str]:
    """What in ``cls`` looks like a secret: member name → why."""
    found: dict[str, str] = {}
    for name, text in members(cls):
        if SECRET_TYPE.search(text):
            found[name] = f"typed {text}"
        elif SECRET_NAME.search(name.lstrip("_")) and set(re.findall(r"\w+", text)) <= PLAIN_WORDS:
            found[name] = f"named {name}: {text or 'undeclared'}"
    return found


def pydantic_masks(cls: type[BaseModel], name: str) -> bool:
    info = cls.model_fields.get(name)
    if info is None:
        return False
    return info.repr is False or bool(re.search(r"\bSecret(Str|Bytes)\b", str(info.annotation)))


def unmasked(classes: list[type]) -> dict[str, dict[str, str]]:
    """The classes that hold a secret but print without masking it, and what they hold."""
    out: dict[str, dict[str, str]] = {}
    for cls in classes:
        if cls in (Secret, Masked) or qualified(cls) in NOT_SECRET:
            continue
        held = holdings(cls)
        if issubclass(cls, Masked) and dataclasses.is_dataclass(cls):
            # Masked prints a dataclass field unless it is marked; a Secret masks itself.
            marked = {f.name for f in dataclasses.fields(cls) if is_secret_field(f)}
            held = {n: why for n, why in held.items() if not why.startswith("typed")}
            held = {n: why for n, why in held.items() if n not in marked}
        elif issubclass(cls, Masked):
            # A plain Masked class prints only what it names in ``shown``.
            held = {n: why for n, why in held.items() if n in cls.shown}
        elif issubclass(cls, BaseModel):
            held = {n: why for n, why in held.items() if not pydantic_masks(cls, n)}
        if held:
            out[qualified(cls)] = held
    return out


# -- instances to print ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """An object and the texts that must never appear when it is printed."""

    thing: object
    secrets: tuple[str, ...]
    shown: tuple[str, ...] = ()  # texts that must appear, so the printing is not empty
    close: Callable[[], None] = lambda: None


def key_forms(raw: bytes) -> tuple[str, ...]:
    """The ways raw key bytes could leak into text."""
    return (raw.hex(), base64.b64encode(raw).decode(), repr(raw)[2:-1], str(list(raw))[1:-1])


def generic_case(cls: type) -> Case:
    """A dataclass filled field by field: a canary in each marked or ``Secret`` field."""
    thing = object.__new__(cls)
    secrets, shown = [], []
    for f in dataclasses.fields(cls):
        text = _text(f.type)
        value: object
        if is_secret_field(f):
            value = f"{CANARY}-{f.name}"
            secrets.append(value)
        elif re.search(r"\bSecret\b", text):
            value = Secret(f"{CANARY}-{f.name}")
            if text.startswith(("Mapping", "dict")):
                value = {"KEY": value}
            secrets.append(f"{CANARY}-{f.name}")
        else:
            value = f"shown-{f.name}"
            shown.append(value)
        object.__setattr__(thing, f.name, value)
    return Case(thing, tuple(secrets), tuple(shown))


def pydantic_case(cls: type[BaseModel]) -> Case:
    """A model with a canary in each member that holds a secret."""
    held = holdings(cls)
    values = {n: {"KEY": CANARY} if n in ("entries", "values") else CANARY for n in held}
    return Case(cls.model_construct(**values), (CANARY,))


def make_secret() -> Case:
    return Case(Secret(CANARY), (CANARY,))


def make_master_key() -> Case:
    return Case(MasterKey(Secret(RAW_KEY)), key_forms(RAW_KEY))


def make_pkcs11_master_key() -> Case:
    module = Path("/usr/lib/softhsm/libsofthsm2.so")
    key = Pkcs11MasterKey(module, "keyfob", "keyfob-master", Secret(CANARY))
    return Case(key, (CANARY,), ("'keyfob-master'",))


def make_webhook_sink() -> Case:
    sink = WebhookSink("https://siem.example/hook", None, CANARY, CANARY.encode()[::-1])
    return Case(sink, (CANARY, CANARY[::-1]), ("'https://siem.example'",))


def make_aead() -> Case:
    return Case(Aead(RAW_KEY), key_forms(RAW_KEY))


def make_data_keys() -> Case:
    ring, _, _ = Keyring.create(MasterKey(Secret(RAW_KEY)))
    keys = crypto.DataKeys()
    sealed = crypto.seal(ring, CANARY.encode(), set_id="s", version=1)
    crypto.open(ring, sealed, set_id="s", version=1, keys=keys)
    dek = crypto.envelope._unwrap_dek(ring, sealed.wrapped_dek, "s", 1)
    return Case(keys, (*key_forms(dek), sealed.wrapped_dek.hex(), CANARY))


def make_signer() -> Case:
    return Case(Signer(SEED), key_forms(SEED))


def make_system_keys() -> Case:
    return Case(SystemKeys(RAW_KEY, SEED, SEED), key_forms(RAW_KEY) + key_forms(SEED))


def make_keyring() -> Case:
    ring, _, _ = Keyring.create(MasterKey(Secret(RAW_KEY)))
    return Case(ring, key_forms(RAW_KEY), ("terms=[1]",))


def make_sealed() -> Case:
    ring, _, _ = Keyring.create(MasterKey(Secret(RAW_KEY)))
    sealed = crypto.seal(ring, CANARY.encode(), set_id="set", version=1)
    forms = (CANARY, *key_forms(sealed.ciphertext), *key_forms(sealed.wrapped_dek))
    return Case(sealed, forms, ("term=1",))


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
    return Case(row, key_forms(ciphertext) + key_forms(wrapped), ("set_id='abc'",))


def make_settings() -> Case:
    key = master.encode(RAW_KEY)
    return Case(Settings(master_key=SecretStr(key), token=SecretStr(TOKEN)), (key, TOKEN))


def make_user_create() -> Case:
    return Case(UserCreate(name="ada", password=SecretStr(CANARY)), (CANARY,))


def make_password_change() -> Case:
    return Case(PasswordChange(password=SecretStr(CANARY)), (CANARY,))


def make_set_create() -> Case:
    body = SetCreate(provider="openai", environment="prod", name="x", entries={"K": CANARY})
    return Case(body, (CANARY,), ("provider='openai'",))


def make_set_update() -> Case:
    return Case(SetUpdate(entries={"K": CANARY}), (CANARY,))


def make_initialised() -> Case:
    return Case(Initialised(operator_token=Secret(TOKEN), token_id="t1"), (TOKEN,))


def proxy_request() -> ProxyRequest:
    return ProxyRequest(LEASE, "openai/prod/default", "GET", "/v1", (), "rid", None, "/proxy")


def make_proxy_request() -> Case:
    return Case(proxy_request(), (LEASE,), ("'openai/prod/default'",))


def make_incoming() -> Case:
    raw = [(b"authorization", f"Bearer {LEASE}".encode()), (b"x-api-key", CANARY.encode())]
    return Case(headers.read_request(raw, max_bytes=4096, max_body=4096), (LEASE,))


def make_upstream() -> Case:
    upstream = Upstream("GET", "https", "api.example.com", 443, "/v1", f"key={CANARY}")
    upstream.headers.append(("authorization", f"Bearer {CANARY}"))
    return Case(upstream, (CANARY,), ("'api.example.com'",))


def make_proxy_use() -> Case:
    profile = Profile.model_validate(
        {
            "base_url": "https://api.example.com",
            "hosts": ["api.example.com"],
            "inject": {"kind": "bearer", "key": "API_KEY"},
        }
    )
    values = {"API_KEY": Secret(CANARY)}
    request = proxy_request()
    use = ProxyUse("lease", "agent", "set", "p/e/n", 1, profile, ("API_KEY",), values, request, 0)
    return Case(use, (CANARY, LEASE), ("'API_KEY'",))


def make_scrubber() -> Case:
    return Case(Scrubber.for_values([CANARY]), (CANARY, base64.b64encode(CANARY.encode()).decode()))


def make_stream_scrub() -> Case:
    stream = Scrubber.for_values([CANARY]).stream()
    stream.feed(f"echo {CANARY} and {CANARY[:10]}".encode())
    return Case(stream, (CANARY, CANARY[:10]), ("count=1",))


def make_client() -> Case:
    client = KeyfobClient("http://127.0.0.1:8200", Secret(TOKEN), httpx.MockTransport(print))
    return Case(client, (TOKEN,), ("'http://127.0.0.1:8200'",), client.close)


ADDR = "http://127.0.0.1:8200"
SHOWN_ADDR = (f"'{ADDR}'",)


def make_agent_client() -> Case:
    client = sdk.AgentClient(ADDR, AGENT, transport=httpx.MockTransport(print))
    return Case(client, (AGENT,), SHOWN_ADDR, client.close)


def make_async_agent_client() -> Case:
    return Case(sdk.AsyncAgentClient(ADDR, AGENT), (AGENT,), SHOWN_ADDR)


def make_operator_client() -> Case:
    client = sdk.OperatorClient(ADDR, TOKEN, transport=httpx.MockTransport(print))
    return Case(client, (TOKEN,), SHOWN_ADDR, client.close)


def make_wire() -> Case:
    wire = sdk_wire.Wire(ADDR, AGENT, "an agent token", httpx.MockTransport(print))
    return Case(wire, (AGENT,), SHOWN_ADDR, wire.close)


def make_async_wire() -> Case:
    return Case(sdk_wire.AsyncWire(ADDR, AGENT, "an agent token"), (AGENT,), SHOWN_ADDR)


def make_wire_base() -> Case:
    return Case(sdk_wire._Base(ADDR, AGENT, "an agent token"), (AGENT,), SHOWN_ADDR)


def make_lease_auth() -> Case:
    client = sdk.AgentClient(ADDR, AGENT, transport=httpx.MockTransport(print))
    auth = sdk.LeaseAuth("openai/prod/default", agent=client)
    lease = sdk.Lease("l1", Secret(LEASE), "openai/prod/default", "request", "", 60, 1, 0.0)
    auth._pool.append((60.0, lease))
    return Case(auth, (AGENT, LEASE), ("'openai/prod/default'",), client.close)


# Realistic instances; every Masked type that is not a dataclass must have one here.
FACTORIES: dict[type, Callable[[], Case]] = {
    Secret: make_secret,
    MasterKey: make_master_key,
    Pkcs11MasterKey: make_pkcs11_master_key,
    WebhookSink: make_webhook_sink,
    Aead: make_aead,
    crypto.DataKeys: make_data_keys,
    Signer: make_signer,
    SystemKeys: make_system_keys,
    Keyring: make_keyring,
    crypto.Sealed: make_sealed,
    VersionRow: make_version_row,
    Settings: make_settings,
    UserCreate: make_user_create,
    PasswordChange: make_password_change,
    SetCreate: make_set_create,
    SetUpdate: make_set_update,
    Initialised: make_initialised,
    ProxyRequest: make_proxy_request,
    headers.Incoming: make_incoming,
    Upstream: make_upstream,
    ProxyUse: make_proxy_use,
    Scrubber: make_scrubber,
    StreamScrub: make_stream_scrub,
    KeyfobClient: make_client,
    sdk.AgentClient: make_agent_client,
    sdk.AsyncAgentClient: make_async_agent_client,
    sdk.OperatorClient: make_operator_client,
    sdk.LeaseAuth: make_lease_auth,
    sdk_wire.Wire: make_wire,
    sdk_wire.AsyncWire: make_async_wire,
    sdk_wire._Base: make_wire_base,
}


def printable(cls: type) -> bool:
    """Printed by the behaviour tests: Masked types, pydantic holders, and Secret."""
    if cls is Masked:
        return False
    if issubclass(cls, Masked) or cls is Secret:
        return True
    return issubclass(cls, BaseModel) and qualified(cls) not in NOT_SECRET and bool(holdings(cls))


def cases_for(cls: type) -> list[Case]:
    cases = [FACTORIES[cls]()] if cls in FACTORIES else []
    if issubclass(cls, Masked) and dataclasses.is_dataclass(cls):
        cases.append(generic_case(cls))
    elif issubclass(cls, BaseModel) and cls not in FACTORIES:
        cases.append(pydantic_case(cls))
    return cases


@functools.cache
def printed() -> list[type]:
    """The types the behaviour tests print. Found when a test asks, not at collection: the
    walk imports every keyfob module (the mcp SDK, PKCS#11, ...), ~2 s of CPU that every
    xdist worker would pay to collect this file."""
    return [c for c in keyfob_classes() if printable(c)]


# -- printing it every way ---------------------------------------------------------------------


def printings(thing: object) -> dict[str, str]:
    return {
        "repr": repr(thing),
        "str": str(thing),
        "f-string": f"{thing}",
        "f-string !r": f"{thing!r}",
        "format spec": format(thing, ">10") if isinstance(thing, Secret) else f"{thing!s:>10}",
        "in a list": str([thing]),
        "in a dict": str({"value": thing}),
        "%-format": "%s %r" % (thing, thing),  # noqa: UP031 -- logging formats this way
        "exception message": str(ValueError(f"cannot use {thing}")),
    }


def _use(thing: object) -> None:
    raise ValueError(f"cannot use {thing!r}")


def traceback_with_locals(thing: object) -> str:
    """A traceback as rich/``capture_locals`` print one: every frame's locals by repr."""
    try:
        _use(thing)
    except ValueError as exc:
        summary = traceback.TracebackException.from_exception(exc, capture_locals=True)
        return "".join(summary.format())
    raise AssertionError("_use did not raise")


def logged(thing: object, caplog: pytest.LogCaptureFixture) -> str:
    log = logging.getLogger("keyfob.test.masking")
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=log.name):
        log.info("as %%r: %r", thing)
        log.info("as %%s: %s", thing)
        log.info("as args: %s", (thing, thing))
        log.info(thing)
        try:
            _use(thing)
        except ValueError:
            log.exception("failed with %r", thing)
    assert len(caplog.records) == 5
    assert "Traceback" in caplog.text  # the exception's text went through the formatter
    return caplog.text


def leaks(case: Case, caplog: pytest.LogCaptureFixture) -> list[str]:
    """How a case's secrets showed: 'how: secret' for each one found."""
    texts = {**printings(case.thing), "traceback locals": traceback_with_locals(case.thing)}
    texts["logging"] = logged(case.thing, caplog)
    return [f"{how}: {s}" for how, text in texts.items() for s in case.secrets if s in text]


# -- the tests ---------------------------------------------------------------------------------


def test_the_walk_finds_the_types_that_hold_secrets():
    found = set(printed())

    assert {MasterKey, Keyring, ProxyRequest, Upstream, Scrubber, SetCreate, Settings} <= found
    assert not any(c.__module__.startswith("tests") for c in found)


def test_every_type_holding_a_secret_masks_it_by_construction():
    assert unmasked(keyfob_classes()) == {}


def test_every_masked_plain_class_has_a_realistic_instance():
    missing = [
        qualified(c)
        for c in printed()
        if issubclass(c, Masked) and not dataclasses.is_dataclass(c) and c not in FACTORIES
    ]

    assert missing == [], "add a make_* factory to FACTORIES for each"


def test_printing_and_logging_show_no_secret(caplog: pytest.LogCaptureFixture):
    """Each type printed every way; what went wrong is listed by type."""
    wrong: dict[str, list[str]] = {}
    for cls in printed():
        cases = cases_for(cls)
        if not cases:
            wrong[qualified(cls)] = ["no instance: add a make_* factory to FACTORIES"]
        for case in cases:
            try:
                found = leaks(case, caplog)
                found += [f"the repr no longer shows {t!r}" for t in case.shown
                          if t not in repr(case.thing)]
            finally:
                case.close()
            if found:
                wrong.setdefault(qualified(cls), []).extend(found)

    assert len(printed()) > 50
    assert wrong == {}


def test_masked_prints_marked_fields_and_secrets_as_hidden():
    case = make_proxy_use()
    text = repr(case.thing)

    assert text.startswith("ProxyUse(lease_id='lease', agent_id='agent',")
    assert "values={'API_KEY': Secret('**********')}" in text
    assert "ProxyRequest(token=<hidden>, set_path='openai/prod/default'," in text
    assert str(case.thing) == text
    assert repr(make_master_key().thing) == "MasterKey(<hidden>)"
    assert repr(make_keyring().thing) == "Keyring(terms=[1], <hidden>)"


# -- the tests above catch what they are for -----------------------------------------------------


@dataclass(frozen=True)
class LeakySecretHolder:
    label: str
    value: Secret[str]


@dataclass(frozen=True)
class LeakyTokenHolder:
    agent_token: str


class LeakyKeyHolder:
    __slots__ = ("_seed",)

    def __init__(self, seed: bytes) -> None:
        self._seed = seed


@dataclass(frozen=True)
class MaskedButUnmarked(Masked):
    name: str
    lease: str


class LeakyBody(BaseModel):
    entries: dict[str, str]


def test_a_new_type_holding_a_secret_without_masked_is_flagged():
    classes = [LeakySecretHolder, LeakyTokenHolder, LeakyKeyHolder, MaskedButUnmarked, LeakyBody]

    flagged = unmasked(classes)

    assert {n.rsplit(".", 1)[1]: sorted(held) for n, held in flagged.items()} == {
        "LeakySecretHolder": ["value"],
        "LeakyTokenHolder": ["agent_token"],
        "LeakyKeyHolder": ["_seed", "seed"],
        "MaskedButUnmarked": ["lease"],
        "LeakyBody": ["entries"],
    }


def test_the_walk_finds_a_new_type_in_any_keyfob_module(monkeypatch: pytest.MonkeyPatch):
    module = importlib.import_module("keyfob.vault.leases")
    monkeypatch.setattr(LeakyTokenHolder, "__module__", module.__name__)
    monkeypatch.setattr(module, "LeakyTokenHolder", LeakyTokenHolder, raising=False)

    assert list(unmasked(keyfob_classes())) == ["keyfob.vault.leases.LeakyTokenHolder"]


def test_the_printing_test_catches_a_repr_that_shows_a_marked_field(
    caplog: pytest.LogCaptureFixture,
):
    leaky = Case(LeakyTokenHolder(agent_token=TOKEN), (TOKEN,))
    unmarked_lease = generic_case(MaskedButUnmarked).thing  # lease is not marked: it prints
    assert isinstance(unmarked_lease, MaskedButUnmarked)
    marked_but_shown = Case(unmarked_lease, (unmarked_lease.lease,))

    assert {how.split(":")[0] for how in leaks(leaky, caplog)} >= {
        "repr",
        "str",
        "exception message",
        "traceback locals",
        "logging",
    }
    assert leaks(marked_but_shown, caplog) != []


def test_masked_refuses_a_hand_written_repr():
    with pytest.raises(TypeError, match="defines __repr__"):

        class Handmade(Masked):
            def __repr__(self) -> str:
                return "Handmade()"

    with pytest.raises(TypeError, match="defines __str__"):

        @dataclass
        class Handmade2(Masked):
            token: str = field(metadata=SECRET)

            def __str__(self) -> str:
                return self.token


# -- Secret itself -----------------------------------------------------------------------------


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
