"""The PKCS#11 master key provider against SoftHSM2: init, write, read, rotate, restart, and
what a wrong PIN, a missing token or a key gone from the token look like."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyfob.api.service import NOT_READY
from keyfob.app import create_app as create_server_app
from keyfob.app.bootstrap import init_vault
from keyfob.errors import ConfigurationError, DecryptionFailed, Unavailable
from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from tests.conftest import CANARY, make_set
from tests.support.asgi import BackgroundLoop, SyncASGITransport
from tests.support.server import start_server
from tests.support.softhsm import SoftHsm, start_softhsm

from .conftest import Cli, RealKeyfob

CTX = Context(actor="operator:test")


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    yield from start_softhsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def key_label() -> str:
    """A key of this test's own on the shared token."""
    return "keyfob-" + secrets.token_hex(4)


@pytest.fixture
def pin_file(hsm: SoftHsm, tmp_path: Path) -> Path:
    path = tmp_path / "pin"
    path.write_text(hsm.pin + "\n")
    path.chmod(0o600)
    return path


def keyfob(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real ``keyfob`` in a child process (a fresh PKCS#11 login)."""
    return subprocess.run(
        [sys.executable, "-m", "keyfob.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def token_key(hsm: SoftHsm, label: str) -> Any:
    """A session of the test's own on the token and the key ``label`` (or ``None``)."""
    import pkcs11
    from pkcs11 import ObjectClass
    from pkcs11 import exceptions as p11

    token = pkcs11.lib(str(hsm.module)).get_token(token_label=hsm.token_label)
    try:
        session = token.open(user_pin=hsm.pin, rw=True)
    except p11.UserAlreadyLoggedIn:
        session = token.open(rw=True)
    try:
        return session, session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
    except p11.NoSuchKey:
        return session, None


async def api(vault: Vault, settings: Settings, token: str | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_server_app(settings, vault=vault)),
        base_url="http://keyfob.test",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )


async def test_init_write_read_rotate_restart_read(
    hsm: SoftHsm, key_label: str, pin_file: Path, tmp_path: Path
):
    data_dir = tmp_path / "data"
    settings = hsm.settings(data_dir, key_label)

    # keyfob init in its own process makes the key on the token; no key file anywhere.
    init = keyfob("init", "--json", env=hsm.env(data_dir, key_label, pin_file))
    assert init.returncode == 0, init.stderr
    token = json.loads(init.stdout)["operator_token"]
    assert json.loads(init.stdout)["master_key_file"] is None
    assert not (data_dir / "master.key").exists()
    assert hsm.pin not in init.stdout + init.stderr
    session, key = token_key(hsm, key_label)
    try:
        from pkcs11 import Attribute

        assert key is not None
        assert key[Attribute.SENSITIVE]
        assert not key[Attribute.EXTRACTABLE]
    finally:
        session.close()

    vault = await Vault.open(settings)
    try:
        async with await api(vault, settings, token) as http:
            created = await http.post("/v1/secret-sets", json=make_set())
            assert created.status_code == 201, created.text
            keys = (await http.get("/v1/keys")).json()
            assert keys["master_key"] == {
                "provider": "pkcs11",
                "module": str(hsm.module),
                "token_label": hsm.token_label,
                "key_label": key_label,
                "mechanism": "CKM_AES_GCM",
            }
            rotated = await http.post("/v1/keys/rotate")
            assert rotated.status_code == 201, rotated.text
            patched = await http.patch(
                "/v1/secret-sets/openai/prod/default",
                json={"entries": {"OPENAI_API_KEY": CANARY + "-2"}},
            )
            assert patched.status_code == 200, patched.text
            assert (await http.post("/v1/keys/rewrap")).json() == {"rewrapped": 1, "term": 2}
            assert (await http.get("/readyz")).status_code == 200
            assert hsm.pin not in json.dumps(keys)
        (init_event,) = [e async for e in vault.audit.export() if e.action == "vault.init"]
        assert init_event.details["master_key_provider"] == "pkcs11"
        current = await vault.sets.reveal("openai/prod/default")
        assert current["OPENAI_API_KEY"].reveal() == CANARY + "-2"
    finally:
        await vault.close()

    # Restart: a new vault and app on the same data dir log in again and open everything.
    again = await Vault.open(settings)
    try:
        assert again.core.ring.terms == [1, 2]
        first = await again.sets.reveal("openai/prod/default", 1)
        assert first["OPENAI_API_KEY"].reveal() == CANARY
        second = await again.sets.reveal("openai/prod/default", 2)
        assert second["OPENAI_API_KEY"].reveal() == CANARY + "-2"
        async with await api(again, settings, token) as http:
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            assert (await http.get("/v1/keys")).json()["active_term"] == 2
    finally:
        await again.close()


@pytest.fixture
async def hsm_vault(
    hsm: SoftHsm, key_label: str, tmp_path: Path
) -> AsyncIterator[tuple[Vault, str]]:
    settings = hsm.settings(tmp_path / "data", key_label)
    vault, done = await Vault.initialise(settings)
    try:
        yield vault, done.operator_token.reveal()
    finally:
        await vault.close()


async def test_a_key_gone_from_the_token_shows_in_readyz_and_reads_go_on(
    hsm: SoftHsm, key_label: str, hsm_vault: tuple[Vault, str]
):
    vault, token = hsm_vault
    await vault.sets.create(CTX, **make_set())
    session, key = token_key(hsm, key_label)
    try:
        key.destroy()
    finally:
        session.close()

    async with await api(vault, vault.settings, token) as http:
        ready = await http.get("/readyz")
        rotate = await http.post("/v1/keys/rotate")
        keys = await http.get("/v1/keys")
    async with await api(vault, vault.settings, None) as http:
        anonymous = await http.get("/readyz")
        unknown = await http.get("/readyz", headers={"Authorization": "Bearer kfo_" + "Q" * 43})

    # A load balancer (or a token that is not an operator's) learns only that it is down:
    # no key or token label, no PKCS#11 error.
    for answer in (anonymous, unknown):
        assert answer.status_code == 503
        assert answer.json()["detail"] == NOT_READY
        for text in (key_label, hsm.token_label, "PKCS", "unavailable ("):
            assert text not in answer.text
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    problem = ready.json()
    assert problem["type"].endswith("unavailable")
    assert f"PKCS#11 master key {key_label!r} on token {hsm.token_label!r}" in problem["detail"]
    assert "unavailable" in problem["detail"]
    # Rotation needs the token: refused as unavailable, not a 500.
    assert rotate.status_code == 503, rotate.text
    assert key_label in rotate.json()["detail"]
    # Degraded but honest: the keys already unwrapped still open what they wrap.
    assert keys.json()["master_key"]["provider"] == "pkcs11"
    entries = await vault.sets.reveal("openai/prod/default")
    assert entries["OPENAI_API_KEY"].reveal() == CANARY
    assert hsm.pin not in ready.text + rotate.text + keys.text


async def test_a_lost_session_is_opened_again(hsm_vault: tuple[Vault, str]):
    vault, token = hsm_vault
    provider: Any = vault.core.ring.master
    provider._session.close()  # as a token restart or a network HSM failover would

    async with await api(vault, vault.settings, token) as http:
        ready = await http.get("/readyz")
        rotate = await http.post("/v1/keys/rotate")

    assert ready.status_code == 200, ready.text
    assert rotate.status_code == 201, rotate.text


async def test_tampered_bytes_fail_to_open_while_a_closed_token_is_unavailable(
    hsm_vault: tuple[Vault, str],
):
    provider = hsm_vault[0].core.ring.master
    wrapped = provider.wrap(b"k" * 32, b"keyfob/kek/v1 term 1")
    assert provider.unwrap(wrapped, b"keyfob/kek/v1 term 1") == b"k" * 32

    with pytest.raises(DecryptionFailed):
        provider.unwrap(wrapped, b"keyfob/kek/v1 term 2")  # bound to its associated data
    flipped = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(DecryptionFailed):
        provider.unwrap(flipped, b"keyfob/kek/v1 term 1")
    assert wrapped[12:-16] != b"k" * 32  # what the database holds is not the key

    provider.close()
    with pytest.raises(Unavailable, match="closed"):
        provider.unwrap(wrapped, b"keyfob/kek/v1 term 1")


async def test_a_wrong_pin_stops_serve_with_one_clear_line(
    hsm: SoftHsm, key_label: str, pin_file: Path, tmp_path: Path
):
    data_dir = tmp_path / "data"
    vault, _ = await Vault.initialise(hsm.settings(data_dir, key_label))
    await vault.close()
    wrong = "wrong-" + secrets.token_hex(6)
    pin_file.write_text(wrong + "\n")

    result = keyfob("serve", "--port", "0", env=hsm.env(data_dir, key_label, pin_file))

    assert result.returncode == 1
    assert result.stderr == (
        f"error: PKCS#11 token {hsm.token_label!r} refused the PIN "
        "(KEYFOB_PKCS11_PIN or KEYFOB_PKCS11_PIN_FILE is wrong)\n"
    )
    assert wrong not in result.stdout + result.stderr
    assert hsm.pin not in result.stdout + result.stderr


async def test_a_missing_token_is_named_and_nothing_is_made(
    hsm: SoftHsm, key_label: str, tmp_path: Path
):
    settings = hsm.settings(tmp_path / "data", key_label, pkcs11_token_label="no-such-token")

    with pytest.raises(ConfigurationError) as caught:
        await Vault.initialise(settings)

    message = str(caught.value)
    assert "no PKCS#11 token labelled 'no-such-token'" in message
    assert repr(hsm.token_label) in message  # what is there instead
    assert "KEYFOB_PKCS11_TOKEN_LABEL" in message
    assert not (tmp_path / "data" / "master.key").exists()
    with pytest.raises(ConfigurationError, match="no keyring yet"):
        await Vault.open(hsm.settings(tmp_path / "data", key_label))


async def test_a_missing_key_on_an_initialised_vault_is_named(
    hsm: SoftHsm, hsm_vault: tuple[Vault, str], tmp_path: Path
):
    settings = hsm.settings(tmp_path / "data", "keyfob-absent")

    with pytest.raises(ConfigurationError, match="no AES key labelled 'keyfob-absent'"):
        await Vault.open(settings)

    session, key = token_key(hsm, "keyfob-absent")
    session.close()
    assert key is None  # opening never makes a key


async def test_another_key_on_the_token_does_not_open_the_keyring(
    hsm: SoftHsm, hsm_vault: tuple[Vault, str], tmp_path: Path
):
    other = "keyfob-other-" + secrets.token_hex(4)
    elsewhere, _ = await Vault.initialise(hsm.settings(tmp_path / "elsewhere", other))
    await elsewhere.close()

    with pytest.raises(ConfigurationError, match="does not open this vault's keyring"):
        await Vault.open(hsm.settings(tmp_path / "data", other))


def test_keys_status_shows_the_provider_never_the_pin(
    hsm: SoftHsm, key_label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = hsm.settings(tmp_path / "data", key_label)
    loop = BackgroundLoop()

    async def start() -> tuple[Vault, str]:
        vault, done = await Vault.initialise(settings)
        return vault, done.operator_token.reveal()

    vault, token = loop.run(start())
    app = create_server_app(settings, vault=vault)
    monkeypatch.setenv("KEYFOB_TOKEN", token)
    real = RealKeyfob(settings, vault, token, loop, SyncASGITransport(app, loop))
    try:
        result = Cli(real)("keys", "status")
        as_json = Cli(real)("keys", "status", "--json")
    finally:
        loop.run(vault.close())
        loop.close()

    assert result.exit_code == 0, result.output
    assert (
        f"master key provider: pkcs11 (module {hsm.module}, token_label {hsm.token_label}, "
        f"key_label {key_label}, mechanism CKM_AES_GCM)"
    ) in result.stdout
    assert json.loads(as_json.stdout)["master_key"]["provider"] == "pkcs11"
    assert hsm.pin not in result.output + as_json.output


def test_the_file_provider_is_shown_with_its_path(real_cli: Cli, real: RealKeyfob):
    result = real_cli("keys", "status")

    key_file = real.settings.resolved_master_key_file.resolve()
    assert f"master key provider: file (path {key_file})" in result.stdout


def test_serving_on_a_key_file_never_loads_pkcs11(tmp_path: Path):
    """The binding is imported only for the pkcs11 provider."""
    script = (
        "import asyncio, sys\n"
        "from keyfob.app import create_app\n"
        "from keyfob.app.bootstrap import init_vault\n"
        "from keyfob.settings import Settings\n"
        "from keyfob.vault import Vault\n"
        f"settings = Settings(data_dir={str(tmp_path / 'data')!r})\n"
        "init_vault(settings)\n"
        "async def main():\n"
        "    vault = await Vault.open(settings)\n"
        "    create_app(settings, vault=vault)\n"
        "    await vault.ready()\n"
        "    await vault.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if 'pkcs11' in m or m.endswith('.hsm')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_server_on_the_token_logs_no_pin(
    hsm: SoftHsm, key_label: str, pin_file: Path, tmp_path: Path
):
    settings = hsm.settings(tmp_path / "data", key_label)
    done = init_vault(settings)
    assert done.operator_token is not None
    token = done.operator_token.reveal()
    env = hsm.env(settings.data_dir, key_label, pin_file)
    env["KEYFOB_LOG_LEVEL"] = "debug"
    server = start_server(settings, token, tmp_path / "server.log", extra_env=env)
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            assert http.post("/v1/secret-sets", json=make_set()).status_code == 201
            assert http.post("/v1/keys/rotate").status_code == 201
            assert http.get("/readyz").status_code == 200
            keys = http.get("/v1/keys").json()
    finally:
        server.stop()

    assert keys["master_key"]["key_label"] == key_label
    assert "GET /readyz" in server.log_text()  # debug-level serving was logged
    for text in (server.log_text(), json.dumps(keys)):
        assert hsm.pin not in text
        assert CANARY not in text


async def test_a_backup_on_the_token_restores_with_the_token_only(
    hsm: SoftHsm, key_label: str, tmp_path: Path
):
    """The backup's key is wrapped by the provider: the HSM key opens it, nothing else."""
    from keyfob.vault import backup_file

    settings = hsm.settings(tmp_path / "data", key_label)
    vault, _ = await Vault.initialise(settings)
    try:
        await vault.sets.create(CTX, **make_set())
    finally:
        await vault.close()
    path = tmp_path / "vault.kfb"
    await backup_file.backup(settings, path)
    assert CANARY.encode() not in path.read_bytes()

    into = hsm.settings(tmp_path / "restored", key_label)
    done = await backup_file.restore(into, path)
    assert done["versions_checked"] == 1
    restored = await Vault.open(into)
    try:
        entries = await restored.sets.reveal("openai/prod/default")
        assert entries["OPENAI_API_KEY"].reveal() == CANARY
    finally:
        await restored.close()
    # Another key on the same token opens nothing, and nothing is written.
    other_label = "keyfob-" + secrets.token_hex(4)
    other, _ = await Vault.initialise(hsm.settings(tmp_path / "other", other_label))
    await other.close()
    elsewhere = hsm.settings(tmp_path / "third", other_label)
    with pytest.raises(ConfigurationError, match="cannot open"):
        await backup_file.restore(elsewhere, path)
    assert not (tmp_path / "third" / "keyfob.db").exists()
