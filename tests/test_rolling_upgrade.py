"""Rolling upgrade: a node on this release keeps serving while the next release's expand
migration is applied under it, and starts again on that newer schema.

The next release is simulated honestly by its migration only: a real Alembic upgrade
runs a script this code does not have (``0007r``: a nullable column on ``agents``, a new
table), from a folder of its own, while this code serves. What is checked is the half of
a rolling upgrade that can break silently — the old code (this code) on the new schema:
writes, lease mints and the proxy keep working, and a restart joins the newer schema
instead of failing. The new code on rows the old code wrote is each migration's own
business (its columns are nullable or defaulted, which tests/contracts/test_expand_only.py
enforces). A schema whose ``schema_compat.oldest_code`` this code does not know (after a
contract migration) is refused at start with a message that says to upgrade.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from keyfob.app.bootstrap import init_vault
from keyfob.errors import ConfigurationError
from keyfob.settings import Settings
from keyfob.store import Database
from keyfob.store.engine import _head_revision
from keyfob.vault import Vault, schema
from tests.conftest import CANARY
from tests.support import loopback
from tests.support.backends import blank_postgres
from tests.support.server import serve_in_thread
from tests.support.upstream import FakeUpstream

NEXT = '''
"""The next release's expand migration (test only)."""
import sqlalchemy as sa
from alembic import op

revision = "0007r"
down_revision = "{head}"


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("team", sa.String(64), nullable=True))
    op.create_table("agent_notes", sa.Column("id", sa.String(32), primary_key=True))


def downgrade() -> None:
    op.drop_table("agent_notes")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("team")
'''


@pytest.fixture
def next_release(tmp_path: Path) -> Path:
    folder = tmp_path / "next_versions"
    folder.mkdir()
    (folder / "0007r_next.py").write_text(NEXT.format(head=_head_revision()))
    return folder


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def restores_schema(backend: str) -> Iterator[None]:
    yield
    if backend == "postgresql":
        blank_postgres()  # the next test rebuilds the template without 0007r


def use(url: str, token: str, fake: FakeUpstream, tag: str) -> None:
    """What a node does all day: write a set, add an agent and grant, mint, proxy."""
    op = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    with op:
        made = op.post(
            "/v1/secret-sets",
            json={
                "provider": "generic",
                "environment": "test",
                "name": tag,
                "entries": {"API_KEY": CANARY},
                "profile": {
                    "base_url": fake.url,
                    "hosts": [fake.host],
                    "inject": {"kind": "bearer", "key": "API_KEY"},
                    "allow_private_upstream": True,
                },
            },
        )
        assert made.status_code == 201, made.text
        patched = op.patch(f"/v1/secret-sets/generic/test/{tag}", json={"entries": {"X": "y"}})
        assert patched.status_code == 200, patched.text
        agent = op.post("/v1/agents", json={"name": f"bot-{tag}"})
        assert agent.status_code == 201, agent.text
        grant = op.post(
            "/v1/grants", json={"agent": f"bot-{tag}", "secret_set": f"generic/test/{tag}"}
        )
        assert grant.status_code == 201, grant.text
        lease = loopback.post(
            url + "/v1/leases",
            json={"secret_set": f"generic/test/{tag}"},
            headers={"Authorization": f"Bearer {agent.json()['token']}"},
        )
        assert lease.status_code == 201, lease.text
        before = fake.count(f"/echo/{tag}")
        answer = loopback.get(
            f"{url}/proxy/generic/test/{tag}/echo/{tag}",
            headers={"Authorization": f"Bearer {lease.json()['token']}"},
        )
        assert answer.status_code == 200, answer.text
        assert fake.count(f"/echo/{tag}") == before + 1
        verified = op.get("/v1/audit/verify")
        assert verified.json()["ok"] is True, verified.text


async def apply_next(settings: Settings, folder: Path) -> None:
    db = Database(settings.resolved_database_url)
    try:
        await db.migrate(extra_versions=[folder])
        assert await db.revision() == "0007r"
    finally:
        await db.close()


async def set_floor(settings: Settings, revision: str) -> None:
    db = Database(settings.resolved_database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"UPDATE schema_compat SET oldest_code = '{revision}'"))
    finally:
        await db.close()


def test_this_release_serves_through_the_next_ones_expand_migration(
    settings: Settings,
    tmp_path: Path,
    next_release: Path,
    fake: FakeUpstream,
    restores_schema: None,
) -> None:
    token = init_vault(settings).operator_token
    assert token is not None
    node = serve_in_thread(settings, token.reveal(), tmp_path / "before.log")
    try:
        use(node.url, token.reveal(), fake, "before")
        asyncio.run(apply_next(settings, next_release))  # `keyfob db upgrade` of N+1
        use(node.url, token.reveal(), fake, "during")  # the running node never noticed
    finally:
        node.stop()

    status = asyncio.run(schema.status(settings))
    assert status["state"] == "ahead"
    assert status["revision"] == "0007r"

    # A restart of this node (say, it crashed mid-rollout) joins the newer schema.
    node = serve_in_thread(settings, token.reveal(), tmp_path / "after.log")
    try:
        use(node.url, token.reveal(), fake, "after")
    finally:
        node.stop()
    assert "newer than this keyfob" in (tmp_path / "after.log").read_text()


def test_a_schema_past_this_releases_floor_is_refused_at_start(
    settings: Settings, next_release: Path, restores_schema: None
) -> None:
    init_vault(settings)
    asyncio.run(apply_next(settings, next_release))
    asyncio.run(set_floor(settings, "0007r"))  # what a contract migration does
    assert asyncio.run(schema.status(settings))["state"] == "ahead-incompatible"
    with pytest.raises(ConfigurationError, match="upgrade keyfob"):
        asyncio.run(Vault.open(settings))


def test_db_upgrade_applies_what_is_pending(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    assert asyncio.run(schema.status(settings))["state"] == "empty"
    done = asyncio.run(schema.upgrade(settings))
    assert done["previous"] is None
    assert done["state"] == "current"
    assert done["pending"] == []
    again = asyncio.run(schema.upgrade(settings))
    assert again["previous"] == again["revision"] == _head_revision()


def test_cli_db_status_and_upgrade(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from keyfob.cli.main import create_app

    env = {"KEYFOB_DATA_DIR": str(tmp_path / "cli")}
    status = CliRunner().invoke(create_app(), ["db", "status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["state"] == "empty"
    upgraded = CliRunner().invoke(create_app(), ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded the schema from nothing to {_head_revision()}" in upgraded.stdout
    again = CliRunner().invoke(create_app(), ["db", "upgrade"], env=env)
    assert "nothing to do: the schema is current" in again.stdout
    broken = CliRunner().invoke(
        create_app(),
        ["db", "status"],
        env={**env, "KEYFOB_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"},
    )
    assert broken.exit_code == 1
    assert broken.stderr.startswith("error: cannot use the database")
    assert "hunter2" not in broken.output
    assert "Traceback" not in broken.output
