"""``keyfob backup`` and ``keyfob restore``: online, consistent, sealed, and proven on restore.

A vault with sets (several versions, one deleted), an agent, a grant and a lease is
backed up, restored into an empty database (the same backend, and SQLite → PostgreSQL),
and read back: every version's values, the tokens, the audit chain. Bad files — a wrong
master key, a changed or cut-short file, not a backup, a newer schema — are one clear
line and a non-zero exit, and leave the target untouched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from typer.testing import CliRunner

from keyfob.cli.main import create_app
from keyfob.crypto import MasterKey, master
from keyfob.errors import ConfigurationError, Conflict
from keyfob.settings import Settings
from keyfob.store.engine import _alembic_config
from keyfob.vault import Context, Vault, backup_file, schema
from tests.conftest import CANARY
from tests.support.backends import PG_SKIP_REASON, PG_URL, fresh_sqlite, reset_postgres
from tests.support.hashing import FAST_HASHING

SECOND = "sk-canary-second-4c6e8a0b2d4f6a8c0e2b4d6f8a0c1e3b"
DELETED = "sk-canary-deleted-1a3c5e7b9d0f2a4c6e8b0d2f4a6c8e0b"
CTX = Context(actor="operator:test")


async def populate(settings: Settings) -> dict[str, Any]:
    """A vault with something of everything; returns what must survive."""
    vault, done = await Vault.initialise(settings)
    try:
        await vault.sets.create(
            CTX,
            provider="openai",
            environment="prod",
            name="default",
            entries={"OPENAI_API_KEY": CANARY},
        )
        await vault.keys.rotate(CTX)  # the versions span two KEK terms
        await vault.sets.update(CTX, "openai/prod/default", entries={"OPENAI_API_KEY": SECOND})
        await vault.sets.create(
            CTX,
            provider="stripe",
            environment="prod",
            name="old",
            entries={"STRIPE_KEY": DELETED},
        )
        await vault.sets.delete(CTX, "stripe/prod/old")
        agent, agent_token = await vault.agents.create(CTX, "bot")
        await vault.grants.create(CTX, {"agent": agent.id, "secret_set": "openai/prod/default"})
    finally:
        await vault.close()
    return {
        "operator_token": done.operator_token.reveal(),
        "agent_token": agent_token.reveal(),
        "versions": {("openai/prod/default", 1): CANARY, ("openai/prod/default", 2): SECOND},
    }


def target(tmp_path: Path, source: Settings, *, backend: str) -> Settings:
    """An empty place to restore into, holding the source's master key (and nothing else)."""
    data = tmp_path / "restored"
    data.mkdir(mode=0o700)
    shutil.copy2(source.resolved_master_key_file, data / "master.key")
    url = reset_postgres() if backend == "postgresql" else None
    return Settings(data_dir=data, database_url=url, **FAST_HASHING)


async def read_back(settings: Settings, kept: dict[str, Any]) -> dict[str, Any]:
    vault = await Vault.open(settings)
    try:
        for (path, version), value in kept["versions"].items():
            entries = await vault.sets.reveal(path, version)
            assert entries["OPENAI_API_KEY"].reveal() == value
        view, _ = await vault.sets.search(include_deleted=True)
        assert sorted(v.path for v in view) == ["openai/prod/default", "stripe/prod/old"]
        await vault.sets.restore(CTX, "stripe/prod/old")  # a deleted set comes back whole
        assert (await vault.sets.reveal("stripe/prod/old"))["STRIPE_KEY"].reveal() == DELETED
        # The tokens handed out before the backup still work (their digests came along).
        await vault.operators.authenticate(kept["operator_token"], CTX, "test")
        await vault.agents.authenticate(kept["agent_token"], CTX, "test")
        report = await vault.audit.verify()
        assert report["ok"], report["first_bad"]
        actions = [e.action for e in await vault.audit.query(limit=1000)]
        return {"report": report, "actions": actions}
    finally:
        await vault.close()


def test_backup_then_restore_reads_everything_back(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    kept = asyncio.run(populate(settings))
    path = tmp_path / "vault.kfb"
    made = asyncio.run(backup_file.backup(settings, path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert made["counts"]["secret_versions"] == 3
    assert made["database"] == backend

    into = target(tmp_path, settings, backend=backend)
    done = asyncio.run(backup_file.restore(into, path))
    assert done["versions_checked"] == 3
    assert done["audit"]["ok"] is True
    seen = asyncio.run(read_back(into, kept))
    assert "vault.restore" in seen["actions"]
    # The restored log is the backed-up one plus the restore's own record.
    assert seen["report"]["count"] >= made["audit"]["count"] + 1


def test_backup_bytes_hold_no_secret_value(settings: Settings, tmp_path: Path) -> None:
    asyncio.run(populate(settings))
    path = tmp_path / "vault.kfb"
    asyncio.run(backup_file.backup(settings, path))
    raw = path.read_bytes()
    for value in (CANARY, SECOND, DELETED):
        for form in (
            value.encode(),
            base64.b64encode(value.encode()),
            value.encode().hex().encode(),
        ):
            assert form not in raw


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)
def test_a_sqlite_backup_restores_into_postgresql(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    kept = asyncio.run(populate(sqlite_settings))
    path = tmp_path / "vault.kfb"
    asyncio.run(backup_file.backup(sqlite_settings, path))
    into = target(tmp_path, sqlite_settings, backend="postgresql")
    asyncio.run(backup_file.restore(into, path))
    asyncio.run(read_back(into, kept))


def test_backup_is_consistent_while_writes_go_on(
    settings: Settings, tmp_path: Path, backend: str
) -> None:
    """Writers keep committing during the backup; the copy is one moment of the vault:
    its chain verifies, and every set's current version is in it."""

    async def run() -> None:
        vault, _ = await Vault.initialise(settings)
        try:
            await vault.sets.create(
                CTX, provider="load", environment="test", name="s", entries={"V": "0"}
            )
            stop = asyncio.Event()

            async def write() -> int:
                n = 0
                while not stop.is_set():
                    n += 1
                    await vault.sets.update(CTX, "load/test/s", entries={"V": str(n)})
                return n

            writer = asyncio.create_task(write())
            await asyncio.sleep(0.05)
            for i in range(3):
                await backup_file.backup(settings, tmp_path / f"b{i}.kfb")
            stop.set()
            assert await writer > 3
        finally:
            await vault.close()

    asyncio.run(run())
    for i in range(3):
        (tmp_path / f"t{i}").mkdir()
        into = target(tmp_path / f"t{i}", settings, backend=backend)
        done = asyncio.run(backup_file.restore(into, tmp_path / f"b{i}.kfb"))
        assert done["audit"]["ok"]
        assert done["versions_checked"] == done["counts"]["secret_versions"]


# -- refusals -----------------------------------------------------------------------------


@pytest.fixture
def made(sqlite_settings: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    asyncio.run(populate(sqlite_settings))
    path = tmp_path / "vault.kfb"
    asyncio.run(backup_file.backup(sqlite_settings, path))
    return sqlite_settings, path


def untouched(settings: Settings) -> None:
    """The restore target is as it was: no vault in it."""

    async def check() -> None:
        with pytest.raises(ConfigurationError, match="no keyring"):
            await Vault.open(settings)

    asyncio.run(check())


def changed(path: Path, at: int) -> Path:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    out = path.with_name(f"changed-{at}.kfb")
    out.write_bytes(bytes(raw))
    return out


def test_a_wrong_master_key_restores_nothing(made: tuple[Settings, Path], tmp_path: Path) -> None:
    _, path = made
    data = tmp_path / "other"
    fresh_sqlite(data)
    other = Settings(data_dir=data, master_key=master.encode(master.generate().reveal()))
    with pytest.raises(ConfigurationError, match="not the one it was made under"):
        asyncio.run(backup_file.restore(other, path))
    untouched(other)


@pytest.mark.parametrize("where", ["header", "body", "tag"])
def test_a_changed_file_restores_nothing(
    made: tuple[Settings, Path], tmp_path: Path, where: str
) -> None:
    source, path = made
    size = path.stat().st_size
    at = {"header": len(backup_file.MAGIC) + 5, "body": size // 2, "tag": size - 1}[where]
    into = target(tmp_path, source, backend="sqlite")
    fresh_sqlite(into.data_dir)
    with pytest.raises(ConfigurationError, match=r"changed or cut short|damaged"):
        asyncio.run(backup_file.restore(into, changed(path, at)))
    untouched(into)


def test_a_cut_short_file_restores_nothing(made: tuple[Settings, Path], tmp_path: Path) -> None:
    source, path = made
    into = target(tmp_path, source, backend="sqlite")
    fresh_sqlite(into.data_dir)
    for keep in (10, len(backend_header(path)) - 3, path.stat().st_size - 7):
        short = tmp_path / f"short-{keep}.kfb"
        short.write_bytes(path.read_bytes()[:keep])
        with pytest.raises(ConfigurationError):
            asyncio.run(backup_file.restore(into, short))
    untouched(into)


def backend_header(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[: raw.index(b"\n", len(backup_file.MAGIC)) + 1]


def reseal(source: Settings, path: Path, edit: Any) -> Path:
    """A validly sealed file whose header and body ``edit`` changed (as a newer or older
    keyfob might write one)."""
    file = backup_file.read_backup(path)
    key = MasterKey(master.read_file(source.resolved_master_key_file))
    body = json.loads(master.open_backup(key, file.sealed, file.associated))
    header = dict(file.header)
    edit(header, body)
    associated = backup_file.MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
    out = path.with_name("resealed.kfb")
    out.write_bytes(associated + master.seal_backup(key, json.dumps(body).encode(), associated))
    return out


def test_a_backup_from_a_newer_schema_is_refused(
    made: tuple[Settings, Path], tmp_path: Path
) -> None:
    source, path = made

    def newer(header: dict[str, Any], body: dict[str, Any]) -> None:
        header["revision"] = "9999z"

    into = target(tmp_path, source, backend="sqlite")
    fresh_sqlite(into.data_dir)
    with pytest.raises(ConfigurationError, match="newer than this keyfob"):
        asyncio.run(backup_file.restore(into, reseal(source, path, newer)))
    untouched(into)


def tables_at(revision: str, path: Path) -> set[str]:
    """The tables of a schema migrated up to ``revision`` (an SQLite file at ``path``)."""
    from alembic import command

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            names = set(sqlalchemy.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert "schema_compat" not in names
    return names - {"alembic_version"}


@pytest.mark.parametrize("into_schema", ["none", "head"])
def test_a_backup_from_an_older_schema_is_migrated(
    made: tuple[Settings, Path], tmp_path: Path, into_schema: str
) -> None:
    """Into no schema (migrated up to the backup's revision) or an empty one at head
    (migrated down to it first), then up to head with the rows in."""
    source, path = made

    then = tables_at("0005s", tmp_path / "then.db")

    def older(header: dict[str, Any], body: dict[str, Any]) -> None:
        # What 0005s wrote: none of the tables later migrations added (schema_compat…).
        header["revision"] = "0005s"
        for name in set(body["tables"]) - then:
            del header["counts"][name]
            del body["tables"][name]

    into = target(tmp_path, source, backend="sqlite")
    if into_schema == "head":
        fresh_sqlite(into.data_dir)
    done = asyncio.run(backup_file.restore(into, reseal(source, path, older)))
    assert done["revision"] == "0005s"
    assert done["versions_checked"] == 3

    async def compat() -> str | None:
        vault = await Vault.open(into)
        try:
            assert await vault.db.at_head()
            return await vault.db.oldest_code()
        finally:
            await vault.close()

    assert asyncio.run(compat()) == "0005s"  # the migration seeded it on the way to head


def test_a_vault_is_not_overwritten_without_force(
    made: tuple[Settings, Path], tmp_path: Path
) -> None:
    source, path = made
    with pytest.raises(Conflict, match="already holds a vault"):
        asyncio.run(backup_file.restore(source, path))

    async def add_set() -> None:
        vault = await Vault.open(source)
        try:
            await vault.sets.create(
                CTX, provider="late", environment="prod", name="x", entries={"K": "v"}
            )
        finally:
            await vault.close()

    asyncio.run(add_set())
    asyncio.run(backup_file.restore(source, path, force=True))

    async def gone() -> list[str]:
        vault = await Vault.open(source)
        try:
            views, _ = await vault.sets.search(include_deleted=True)
            report = await vault.audit.verify()
            assert report["ok"], report["first_bad"]
            return [v.path for v in views]
        finally:
            await vault.close()

    assert "late/prod/x" not in asyncio.run(gone())


def test_a_backup_never_overwrites_a_file(made: tuple[Settings, Path]) -> None:
    source, path = made
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match="already exists"):
        asyncio.run(backup_file.backup(source, path))
    assert path.read_bytes() == before


# -- the CLI ---------------------------------------------------------------------------------


def cli(settings: Settings, *args: str) -> Any:
    env = {"KEYFOB_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["KEYFOB_DATABASE_URL"] = settings.database_url
    if settings.master_key is not None:
        env["KEYFOB_MASTER_KEY"] = settings.master_key.get_secret_value()
    return CliRunner().invoke(create_app(), list(args), env=env)


def test_cli_backup_and_restore(made: tuple[Settings, Path], tmp_path: Path) -> None:
    source, _ = made
    path = tmp_path / "cli.kfb"
    out = cli(source, "backup", str(path), "--json")
    assert out.exit_code == 0, out.output
    header = json.loads(out.stdout)
    assert header["revision"]
    assert header["audit"]["head"]
    into = target(tmp_path, source, backend="sqlite")
    out2 = cli(into, "restore", str(path))
    assert out2.exit_code == 0, out2.output
    assert "audit:" in out2.stdout
    assert "verified" in out2.stdout
    for value in (CANARY, SECOND, DELETED):
        assert value not in out.output + out2.output


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.with_name("missing.kfb"),
        lambda p: (p.with_name("text.kfb").write_text("hello\n"), p.with_name("text.kfb"))[1],
        lambda p: (
            p.with_name("cut.kfb").write_bytes(p.read_bytes()[:-40]),
            p.with_name("cut.kfb"),
        )[1],
        lambda p: changed(p, p.stat().st_size // 2),
    ],
    ids=["missing", "not-a-backup", "cut-short", "changed"],
)
def test_cli_refuses_bad_files_in_one_line(
    made: tuple[Settings, Path], tmp_path: Path, make: Any
) -> None:
    source, path = made
    into = target(tmp_path, source, backend="sqlite")
    out = cli(into, "restore", str(make(path)))
    assert out.exit_code == 1
    assert out.stderr.startswith("error: "), out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.output


def test_cli_wrong_master_key_and_no_master_key(
    made: tuple[Settings, Path], tmp_path: Path
) -> None:
    _, path = made
    data = tmp_path / "nokey"
    data.mkdir()
    out = cli(Settings(data_dir=data), "restore", str(path))
    assert out.exit_code == 1
    assert "master key" in out.stderr
    assert "Traceback" not in out.output
    wrong = Settings(data_dir=data, master_key=master.encode(master.generate().reveal()))
    out = cli(wrong, "restore", str(path))
    assert out.exit_code == 1
    assert "not the one it was made under" in out.stderr


def test_a_backup_never_migrates(sqlite_settings: Settings, tmp_path: Path) -> None:
    """A schema behind this keyfob is refused, not upgraded under the nodes that serve it."""
    from alembic import command
    from sqlalchemy import create_engine

    from keyfob.store.engine import _alembic_config

    asyncio.run(populate(sqlite_settings))
    engine = create_engine(f"sqlite:///{sqlite_settings.data_dir / 'keyfob.db'}")
    with engine.begin() as conn:
        config = _alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0005s")
    engine.dispose()
    with pytest.raises(ConfigurationError, match="older than this keyfob"):
        asyncio.run(backup_file.backup(sqlite_settings, tmp_path / "old.kfb"))
    assert not (tmp_path / "old.kfb").exists()
    assert asyncio.run(schema.status(sqlite_settings))["revision"] == "0005s"
