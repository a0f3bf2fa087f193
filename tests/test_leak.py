"""The leak test: secret values planted through the API and the CLI never come back out.

A real server is driven through every route, the proxy included (against an upstream
that echoes the injected credential back), and the error paths (with the canaries in
the bad input); then every response, the CLI's output, the server log, every file in the
data directory (the SQLite WAL read while the server still runs) and, on PostgreSQL,
every row of every table are searched for each canary in raw, base64, URL, JSON and hex
form. The canaries must also be where they belong: the vault still opens them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.conftest import CANARY
from tests.support import zygote
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream

SECOND = "xoxb-canary-2b4d6f8a0c1e3a5b7d9f1a3c5e7b9d0f"
PATCHED = "sk-canary-rotated-c3e5a7b9d1f2a4c6e8b0d2f4a6c8e0b1"
STRIPE = "rk_live_canary_e8a1c3e5b7d9f0a2c4e6b8d0f1a3c5e7"
CLI_FIRST = "ghp_canaryCliFirst4f6a8c0e2b4d6f8a0c1e3b5d7f9"
CLI_SECOND = "ghp_canaryCliSecond7b9d1f3a5c7e9b1d3f5a7c9e1b"
PROXIED = "sk-canary-proxied-9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c"
PROXY_USER = "canary-proxy-user-4b6d8f0a2c4e"
PLANTED = [CANARY, SECOND, PATCHED, STRIPE, CLI_FIRST, CLI_SECOND, PROXIED, PROXY_USER]
SET = "openai/prod/default"
URL = f"/v1/secret-sets/{SET}"


def forms(value: str) -> list[bytes]:
    """The shapes a leaked value takes: raw, JSON- and URL-escaped, hex, and base64 (std and
    URL-safe) at each of the three byte alignments it could have inside a larger blob."""
    raw = value.encode()
    found = {
        raw,
        json.dumps(value)[1:-1].encode(),
        quote(value, safe="").encode(),
        quote_plus(value).encode(),
        raw.hex().encode(),
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            encoded = encode(b"\0" * shift + raw)
            # Drop the edge groups, which mix in neighbouring bytes or padding.
            found.add(encoded[4 if shift else 0 : -4])
    return sorted(found)


def leaks(needles: list[str], haystacks: dict[str, bytes]) -> list[str]:
    hits = []
    for value in needles:
        for form in forms(value):
            for where, blob in haystacks.items():
                if form in blob:
                    hits.append(f"{value[:12]}… as {form[:16]!r}… in {where}")
    return hits


def test_the_detector_finds_every_form() -> None:
    blobs = {
        "raw": CANARY.encode(),
        "b64-in-json": base64.b64encode(json.dumps({"K": CANARY}).encode()),
        "urlsafe": base64.urlsafe_b64encode(b"xy" + CANARY.encode()),
        "query": quote_plus(f"v={CANARY}").encode(),
        "hex": b"\\x" + CANARY.encode().hex().encode(),
    }
    for where, blob in blobs.items():
        assert leaks([CANARY], {where: blob}), where
    assert leaks([CANARY], {"other": SECOND.encode()}) == []


@dataclass
class Evidence:
    """What left the server (``seen``: responses, CLI output) and what it kept (``kept``:
    files, log, database rows), keyed by where; plus every token handed out on the way."""

    seen: dict[str, bytes] = field(default_factory=dict)
    kept: dict[str, bytes] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)

    def add(self, where: str, blob: bytes, *, kept: bool = False) -> None:
        into = self.kept if kept else self.seen
        into[f"{len(into):03d} {where}"] = blob

    def record(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.add(
            f"{request.method} {request.url.path} -> {response.status_code}",
            headers.encode() + b"\n\n" + response.content,
        )
        if response.status_code == 201 and b'"token"' in response.content:
            self.tokens.append(response.json()["token"])

    def files(self, directory: Path, when: str) -> None:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                self.add(f"{when}: {path.name}", path.read_bytes(), kept=True)


@pytest.fixture
def evidence() -> Evidence:
    return Evidence()


@pytest.fixture
def http(live_server: LiveServer, evidence: Evidence) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.operator_token}"},
        event_hooks={"response": [evidence.record]},
        timeout=30,
    ) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    if not response.headers.get("content-type", "").startswith("application/json"):
        return {}
    body: dict[str, Any] = response.json()
    return body


def sets_routes(http: httpx.Client) -> None:
    entries = {"OPENAI_API_KEY": CANARY, "OPENAI_ORG": SECOND}
    body = {
        "provider": "openai",
        "environment": "prod",
        "name": "default",
        "entries": entries,
        "labels": {"team": "ml"},
        "profile": {"preset": "openai"},
    }
    ok(http.post("/v1/secret-sets", json=body), 201)
    ok(http.get("/v1/secret-sets", params={"provider": "openai", "label": "team:ml"}))
    etag = http.get(URL).headers["etag"]
    ok(http.patch(URL, json={"entries": {"OPENAI_API_KEY": PATCHED}}, headers={"If-Match": etag}))
    ok(http.patch(URL, json={"entries": {"OPENAI_ORG": None}, "expected_version": 2}))
    ok(http.get(f"{URL}/versions"))
    ok(http.post(f"{URL}/rollback", json={"version": 1}))
    ok(http.delete(URL))
    ok(http.get("/v1/secret-sets", params={"include_deleted": "true"}))
    ok(http.post(f"{URL}/restore"))
    ok(http.get(URL))

    stripe = {
        "provider": "stripe",
        "environment": "prod",
        "name": "billing",
        "entries": {"STRIPE_SECRET_KEY": STRIPE},
        "profile": {"preset": "stripe"},
    }
    ok(http.post("/v1/secret-sets", json=stripe), 201)
    ok(http.delete("/v1/secret-sets/stripe/prod/billing"))
    ok(http.post("/v1/secret-sets/stripe/prod/billing/purge"))


def agent_routes(http: httpx.Client) -> None:
    agent = ok(http.post("/v1/agents", json={"name": "leaky-bot"}), 201)
    as_agent = {"Authorization": f"Bearer {agent['token']}"}
    ok(http.get("/v1/agents"))
    budgets = [{"unit": "requests", "limit": 100, "window": "day"}]
    grant = ok(
        http.post(
            "/v1/grants", json={"agent": "leaky-bot", "secret_set": SET, "budgets": budgets}
        ),
        201,
    )
    ok(http.get("/v1/grants"))
    ok(http.get("/v1/me/grants", headers=as_agent))
    lease = ok(http.post("/v1/leases", json={"secret_set": SET}, headers=as_agent), 201)
    as_lease = {"Authorization": f"Bearer {lease['token']}"}
    ok(http.post("/v1/leases/check", json={"action": "proxy"}, headers=as_lease))
    # The grant does not allow export, so the one plaintext exit stays shut.
    refused = http.post(f"{URL}/export", json={}, headers=as_lease)
    assert refused.status_code == 403, refused.text
    ok(http.get("/v1/leases", params={"all": "true"}))
    ok(http.post("/v1/leases/revoke", json={"agent": "leaky-bot"}))
    ok(http.delete(f"/v1/grants/{grant['id']}"))
    ok(http.post("/v1/agents/leaky-bot/disable"))


def audit_keys_tokens_service(http: httpx.Client) -> None:
    ok(http.get("/v1/audit", params={"action": "secret_set.", "limit": 1000}))
    ok(http.get("/v1/audit", params={"target": f"secret_set:{SET}", "outcome": "ok"}))
    ok(http.get("/v1/audit/verify"))
    ok(http.get("/v1/audit/export"))
    ok(http.get("/v1/usage", params={"group_by": "secret_set"}))
    ok(http.get("/v1/usage", params={"group_by": "grant"}))
    ok(http.put("/v1/prices", json={"model": "leaky-model", "input": 1, "output": 2}))
    ok(http.get("/v1/prices"))
    ok(http.get("/v1/keys"))
    ok(http.post("/v1/keys/rotate"), 201)
    ok(http.post("/v1/keys/rewrap"))
    ok(http.post("/v1/keys/1/retire"))
    token = ok(http.post("/v1/tokens", json={"name": "leak-test"}), 201)
    ok(http.get("/v1/tokens"))
    ok(http.get("/v1/keys", headers={"Authorization": f"Bearer {token['token']}"}))
    ok(http.delete(f"/v1/tokens/{token['id']}"))
    revoked = http.get("/v1/keys", headers={"Authorization": f"Bearer {token['token']}"})
    assert revoked.status_code == 401
    for path in ("/healthz", "/readyz", "/openapi.json"):
        ok(http.get(path))


def error_paths(http: httpx.Client) -> None:
    """Bad input carrying the canaries: refused, and not echoed anywhere."""
    base = {"provider": "openai", "environment": "prod", "name": "bad"}
    refusals = [
        http.post("/v1/secret-sets", json={**base, "entries": {"not-a-key": CANARY}}),
        http.post("/v1/secret-sets", json={**base, "entries": {"K": [CANARY]}}),
        http.post("/v1/secret-sets", json={**base, "entries": CANARY}),
        http.post("/v1/secret-sets", json={**base, "entries": {"K": "v"}, "labels": CANARY}),
        http.patch(URL, json={"entries": {"OPENAI_API_KEY": CANARY}, "expected_version": SECOND}),
        http.patch(URL, json={"entries": {"OPENAI_API_KEY": CANARY}}, headers={"If-Match": '"99"'}),
        http.post(
            "/v1/secret-sets",
            content=b'{"entries": {"K": "' + CANARY.encode(),
            headers={"content-type": "application/json"},
        ),
        http.post(
            "/v1/secret-sets",
            content=f"entries={CANARY}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        http.get("/v1/keys", headers={"Authorization": f"Bearer {CANARY}"}),
        http.put(URL, json={"entries": {"K": CANARY}}),
    ]
    assert all(400 <= r.status_code < 500 for r in refusals), [r.status_code for r in refusals]

    padding = "x" * (Settings.model_fields["max_body_bytes"].default + 1)
    huge = json.dumps({**base, "entries": {"K": CANARY, "PAD": padding}}).encode()
    assert (
        http.post(
            "/v1/secret-sets", content=huge, headers={"content-type": "application/json"}
        ).status_code
        == 413
    )

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 1 << 20):
            yield huge[start : start + (1 << 20)]

    chunked = http.post(
        "/v1/secret-sets", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413


def proxy_routes(http: httpx.Client, upstream: FakeUpstream) -> None:
    """The proxy, against an upstream that echoes the injected credential back."""
    for kind, inject in (
        ("bearer", {"kind": "bearer", "key": "API_KEY"}),
        ("basic", {"kind": "basic", "username": "{API_USER}", "password": "{API_KEY}"}),
        ("query", {"kind": "query", "param": "key", "key": "API_KEY"}),
    ):
        body = {
            "provider": "generic",
            "environment": "leak",
            "name": kind,
            "entries": {"API_KEY": PROXIED, "API_USER": PROXY_USER},
            "profile": {
                "base_url": upstream.url,
                "hosts": [upstream.host],
                "inject": inject,
                "allow_private_upstream": True,
            },
        }
        ok(http.post("/v1/secret-sets", json=body), 201)
        agent = ok(http.post("/v1/agents", json={"name": f"proxy-{kind}"}), 201)
        grant = {"agent": f"proxy-{kind}", "secret_set": f"generic/leak/{kind}"}
        ok(http.post("/v1/grants", json={**grant, "scopes": ["workflow"]}), 201)
        as_agent = {"Authorization": f"Bearer {agent['token']}"}
        lease = ok(
            http.post(
                "/v1/leases",
                json={"secret_set": f"generic/leak/{kind}", "scope": "workflow"},
                headers=as_agent,
            ),
            201,
        )
        as_lease = {"Authorization": f"Bearer {lease['token']}"}
        route = f"/proxy/generic/leak/{kind}"
        echoed = ok(http.post(f"{route}/echo/x?q=1", json={"k": "v"}, headers=as_lease))
        assert echoed["headers"], "the echo upstream answered"
        ok(http.get(f"{route}/sse?events=2&split=1", headers=as_lease))
        ok(http.get(f"{route}/gzip", headers=as_lease))
        assert http.get(f"{route}/status/500", headers=as_lease).status_code == 500
        assert http.get(f"{route}/a%2fb", headers=as_lease).status_code == 400
    # Metrics name the sets that were used: never a value, token or lease.
    scraped = http.get("/metrics")
    assert scraped.status_code == 200
    assert b'keyfob_proxy_requests_total{' in scraped.content
    # The upstream did get the credential: the proxy sent it where it belongs.
    assert any(PROXIED in s.query or PROXIED in str(s.headers) for s in upstream.seen) or any(
        base64.b64encode(f"{PROXY_USER}:{PROXIED}".encode()).decode() in str(s.headers)
        for s in upstream.seen
    )


def run_cli(
    live_server: LiveServer, evidence: Evidence, *args: str, stdin: str = "", ok: bool = True
) -> None:
    """``python -m keyfob.cli ARGS`` as a user runs it (a process of its own, forked from a
    warm interpreter: tests/support/zygote.py): address and token from the environment,
    values on stdin; its output is evidence."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env.update(KEYFOB_ADDR=live_server.url, KEYFOB_TOKEN=live_server.operator_token)
    done = zygote.run_module("keyfob.cli", args, env=env, input=stdin.encode(), timeout=60)
    evidence.add(f"cli {' '.join(args)} stdout", done.stdout)
    evidence.add(f"cli {' '.join(args)} stderr", done.stderr)
    assert (done.returncode == 0) is ok, (args, done.stderr.decode(errors="replace"))


def cli_commands(live_server: LiveServer, evidence: Evidence) -> None:
    def cli(*args: str, stdin: str = "", ok: bool = True) -> None:
        run_cli(live_server, evidence, *args, stdin=stdin, ok=ok)

    bot = "github/prod/bot"
    cli("set", "create", bot, "--key", "GITHUB_TOKEN", "--json", stdin=CLI_FIRST)
    cli("set", "put", bot, "--key", "GITHUB_TOKEN", stdin=CLI_SECOND + "\n")
    cli("set", "put", bot, stdin=f"GITHUB_APP_KEY={CLI_FIRST}\n")
    cli("set", "list")
    cli("set", "list", "--json")
    cli("set", "show", bot)
    cli("set", "show", bot, "--json")
    cli("set", "versions", bot)
    cli("set", "rollback", bot, "1", "--json")
    cli("set", "delete", bot)
    cli("set", "restore", bot)
    cli("audit", "tail", "--limit", "50")
    cli("audit", "tail", "--json")
    cli("audit", "verify")
    cli("audit", "export")
    cli("keys", "status")
    cli("keys", "rotate")
    cli("keys", "rewrap", "--json")
    cli("token", "list")
    # Refusals, with a canary on stdin: the messages must not carry it.
    cli("set", "create", "github/prod/bad", "--key", "x-y", stdin=CANARY, ok=False)
    cli("set", "put", bot, "--key", "GITHUB_TOKEN", "--expect-version", "1", stdin=CANARY, ok=False)
    cli("set", "create", "github/prod/bad", stdin=f"not-a-key={CANARY}\n", ok=False)
    cli("set", "create", "github/prod/bad", stdin=f'{{"K": "{CANARY}"', ok=False)


async def postgres_rows(url: str) -> bytes:
    """Every row of every table, as PostgreSQL renders it in text (bytea as hex)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        assert len(tables) >= 5
        lines = []
        for table in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t')
            lines.extend(f"{table['tablename']}: {r['row']}" for r in rows)
        return "\n".join(lines).encode()
    finally:
        await conn.close()


async def planted_values(settings: Settings) -> dict[tuple[str, int | None], dict[str, str]]:
    vault = await Vault.open(settings)
    try:
        wanted: list[tuple[str, int | None]] = [(SET, None), (SET, 2), ("github/prod/bot", 2)]
        values = {}
        for path, version in wanted:
            entries = await vault.sets.reveal(path, version)
            values[(path, version)] = {k: v.reveal() for k, v in entries.items()}
        return values
    finally:
        await vault.close()


def search_everything(live_server: LiveServer, evidence: Evidence) -> None:
    settings = live_server.settings
    data_dir = settings.data_dir
    evidence.files(data_dir, "while serving")
    if settings.database_url is None:
        wal = data_dir / "keyfob.db-wal"
        assert wal.is_file(), "no WAL to read: is the database in WAL mode?"
        assert wal.stat().st_size > 0, "the WAL was checkpointed away before it could be read"
    live_server.stop()
    evidence.files(data_dir, "after stop")
    log = live_server.log_path.read_bytes()
    assert b"/v1/audit/verify" in log, "the server log does not show the requests"
    evidence.add("server log", log, kept=True)
    if settings.database_url is not None:
        rows = asyncio.run(postgres_rows(settings.database_url))
        evidence.add("postgresql rows", rows, kept=True)

    assert leaks(PLANTED, evidence.seen) == []
    assert leaks(PLANTED, evidence.kept) == []
    # Tokens are shown once and kept only as keyed hashes.
    assert len(evidence.tokens) >= 3
    assert leaks([live_server.operator_token, *evidence.tokens], evidence.kept) == []


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The server also ships its audit log to a file in the data dir, which is searched."""
    return settings.model_copy(
        update={"audit_ship_file": settings.data_dir / SHIPPED, "audit_ship_poll": 0.05}
    )


SHIPPED = "audit-shipped.jsonl"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.mark.slow
def test_the_api_and_cli_leak_no_secret(
    live_server: LiveServer, http: httpx.Client, evidence: Evidence, upstream: FakeUpstream
) -> None:
    data_dir = live_server.settings.data_dir
    for phase in (sets_routes, agent_routes, audit_keys_tokens_service, error_paths):
        phase(http)
        # Read the files between phases too, so a WAL checkpoint cannot hide a passing leak.
        evidence.files(data_dir, f"after {phase.__name__}")
    proxy_routes(http, upstream)
    evidence.files(data_dir, "after proxy_routes")
    cli_commands(live_server, evidence)
    shipped = data_dir / SHIPPED
    assert shipped.is_file(), "the audit log was not shipped"
    assert b'"action":"secret_set.create"' in shipped.read_bytes()

    search_everything(live_server, evidence)

    values = asyncio.run(planted_values(live_server.settings))
    assert values[(SET, None)] == {"OPENAI_API_KEY": CANARY, "OPENAI_ORG": SECOND}
    assert values[(SET, 2)] == {"OPENAI_API_KEY": PATCHED, "OPENAI_ORG": SECOND}
    assert values[("github/prod/bot", 2)] == {"GITHUB_TOKEN": CLI_SECOND}
