"""Nothing acknowledged is lost when the writer is killed with SIGKILL, again and again."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from tests.conftest import CANARY
from tests.support import loopback, zygote
from tests.support.server import ProcessServer, env_for, free_port, start_server
from tests.support.upstream import FakeUpstream

WRITER = "import runpy; runpy.run_module('tests.support.crash_writer', run_name='__main__')"
SET = "crash/test/writer"
KILLS = 22
MIN_KILLS = 8
WRITER_BUDGET = 4.0  # seconds (~10 forked writers here; 8 fresh interpreters took 8 s)

pytestmark = pytest.mark.slow


async def prepare(settings: Settings) -> None:
    vault, _ = await Vault.initialise(settings)
    try:
        await vault.sets.create(
            Context(actor="system:crash-test"),
            provider="crash",
            environment="test",
            name="writer",
            entries={"VALUE": "v0"},
        )
    finally:
        await vault.close()


def run_and_kill(settings: Settings, first: int, rng: random.Random) -> list[tuple[int, str]]:
    """Start a writer, let it write for a random moment, SIGKILL it; return its ACKs. The
    writer is a process forked from a warm interpreter (tests/support/zygote.py), so the
    time budget goes to writing and killing rather than to importing keyfob."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        child = zygote.spawn(WRITER, [SET, str(first)], env_for(settings), out_w, err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    with os.fdopen(out_r, "rb") as stdout, os.fdopen(err_r, "rb") as stderr:
        try:
            ready = stdout.readline()
            assert ready == b"READY\n", (ready, b"" if ready else stderr.read())
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        output = stdout.read()
    assert child.returncode == -signal.SIGKILL
    acks = []
    for line in output.split(b"\n")[:-1]:  # a cut-off last line was never acknowledged
        tag, version, value = line.decode().split(" ")
        assert tag == "ACK"
        acks.append((int(version), value))
    return acks


async def check(settings: Settings, acked: list[tuple[int, str]]) -> None:
    vault = await Vault.open(settings)
    try:
        for version, value in acked:
            entries = await vault.sets.reveal(SET, version)
            assert entries["VALUE"].reveal() == value, f"version {version} lost its value"
        current = (await vault.sets.get(SET)).version
        assert current >= max(version for version, _ in acked)
        report = await vault.audit.verify()
        assert report["ok"] is True, report["first_bad"]
        updates = await vault.audit.query(action="secret_set.update", limit=100000)
        assert len(updates) == current - 1, "every version has exactly one audit record"
        if vault.db.is_sqlite:
            async with vault.db.engine.connect() as conn:
                result = (await conn.execute(text("PRAGMA integrity_check"))).scalar_one()
            assert result == "ok"
    finally:
        await vault.close()


def test_acknowledged_writes_survive_sigkill(settings: Settings) -> None:
    asyncio.run(prepare(settings))
    seed = random.randrange(1 << 30)
    print(f"crash writer seed {seed}")  # rerun a failure with this seed
    rng = random.Random(seed)
    acked: list[tuple[int, str]] = []
    started = time.monotonic()

    for round_ in range(KILLS):
        acked.extend(run_and_kill(settings, (round_ + 1) * 1_000_000, rng))
        # Bounded in time on a loaded machine; a fast one does all KILLS rounds.
        if round_ + 1 >= MIN_KILLS and time.monotonic() - started > WRITER_BUDGET:
            break

    assert len(acked) >= MIN_KILLS, "the writers hardly wrote: the test proves nothing"
    versions = [version for version, _ in acked]
    assert versions == sorted(set(versions)), "versions must only move forward"
    asyncio.run(check(settings, acked))
    assert time.monotonic() - started < 120


# -- kill -9 of a serving node under mixed load ------------------------------------------------
#
# Workers drive a real server process (or two, on PostgreSQL) with everything at once:
# set writes, lease mints, and single-use leases spent through the proxy on an upstream
# that counts every request it receives (the lease id is in the path). At a seeded random
# moment one node gets SIGKILL. Its clients must see connection errors, never a wrong
# answer; the other node keeps serving. After a restart: every acknowledged set version
# reads back, every acknowledged mint is there, every spent or in-flight lease is tried
# again and no lease id reached the upstream twice, and the audit chain verifies.

LOAD_BUDGET = 5.0  # seconds of kill rounds per backend, at least two rounds
WORKERS = 4
AGENT = "crash-agent"


@dataclass
class Tally:
    """What the clients saw: acknowledged writes and mints, leases spent, and anything wrong."""

    acked_versions: list[tuple[str, int, str]] = field(default_factory=list)
    acked_mints: set[str] = field(default_factory=set)
    spent: dict[str, str] = field(default_factory=dict)  # lease id -> token, 200 or in flight
    answered: dict[str, int] = field(default_factory=dict)  # node url -> answers after the kill
    refused: dict[str, int] = field(default_factory=dict)  # node url -> connection errors
    working: set[int] = field(default_factory=set)  # workers with an answer before the kill
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Node:
    settings: Settings
    env: dict[str, str]
    log: Path
    port: int = 0
    server: ProcessServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, token: str) -> None:
        self.port = self.port or free_port()
        self.server = start_server(self.settings, token, self.log, self.env, port=self.port)

    def kill(self) -> None:
        if self.server is None or self.server.process is None:
            return
        if self.server.process.poll() is None:
            self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(timeout=30)


def _expect(tally: Tally, answer: httpx.Response, ok: int, what: str) -> bool:
    """A clean answer is the success asked for or a problem+json (503 under pressure)."""
    if answer.status_code == ok:
        return True
    if not answer.headers.get("content-type", "").startswith("application/problem+json"):
        with tally.lock:
            tally.wrong.append(f"{what}: {answer.status_code} {answer.text[:200]}")
    return False


def _worker(
    n: int,
    node: Node,
    agent_token: str,
    token: str,
    tally: Tally,
    stop: threading.Event,
    killed: threading.Event,
    seed: int,
) -> None:
    rng = random.Random(seed * 100 + n)
    path = f"crash/load/w{n}"
    tls = loopback.TLS
    op = httpx.Client(
        base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=10, verify=tls
    )
    agent = httpx.Client(
        base_url=node.url,
        headers={"Authorization": f"Bearer {agent_token}"},
        timeout=10,
        verify=tls,
    )
    proxy = httpx.Client(base_url=node.url, timeout=10, verify=tls)
    counter = 0
    with op, agent, proxy:
        while not stop.is_set():
            counter += 1
            choice = rng.random()
            in_flight: tuple[str, str] | None = None
            try:
                if choice < 0.35:
                    value = f"s{seed}-{n}-{counter}"
                    answer = op.patch(f"/v1/secret-sets/{path}", json={"entries": {"V": value}})
                    if _expect(tally, answer, 200, "set write"):
                        version = int(answer.json()["version"])
                        with tally.lock:
                            tally.acked_versions.append((path, version, value))
                else:
                    minted = agent.post("/v1/leases", json={"secret_set": "crash/load/proxy"})
                    if not _expect(tally, minted, 201, "lease mint"):
                        continue
                    lease = minted.json()
                    with tally.lock:
                        tally.acked_mints.add(lease["id"])
                    if choice < 0.5:
                        continue  # minted, not spent
                    in_flight = (lease["id"], lease["token"])
                    answer = proxy.get(
                        f"/proxy/crash/load/proxy/echo/{lease['id']}",
                        headers={"Authorization": f"Bearer {lease['token']}"},
                    )
                    if _expect(tally, answer, 200, "proxy"):
                        if answer.json()["path"] != f"/echo/{lease['id']}":
                            tally.wrong.append(f"proxy answered for another request: {answer.text}")
                    with tally.lock:
                        tally.spent[lease["id"]] = lease["token"]
                    in_flight = None
                with tally.lock:
                    if killed.is_set():
                        tally.answered[node.url] = tally.answered.get(node.url, 0) + 1
                    else:
                        tally.working.add(n)
            except httpx.TransportError:
                if in_flight is not None:
                    with tally.lock:
                        tally.spent[in_flight[0]] = in_flight[1]
                with tally.lock:
                    tally.refused[node.url] = tally.refused.get(node.url, 0) + 1
                if not killed.is_set():
                    with tally.lock:
                        tally.wrong.append(f"connection error before any kill: {node.url}")
                time.sleep(0.02)


async def _prepare_load(settings: Settings, upstream: FakeUpstream) -> tuple[str, str]:
    """Sets for the writers and the proxy, an agent with a request-scoped grant."""
    vault, done = await Vault.initialise(settings)
    ctx = Context(actor="system:crash-test")
    try:
        for n in range(WORKERS):
            await vault.sets.create(
                ctx, provider="crash", environment="load", name=f"w{n}", entries={"V": "v0"}
            )
        await vault.sets.create(
            ctx,
            provider="crash",
            environment="load",
            name="proxy",
            entries={"API_KEY": CANARY},
            profile={
                "base_url": upstream.url,
                "hosts": [upstream.host],
                "inject": {"kind": "bearer", "key": "API_KEY"},
                "allow_private_upstream": True,
            },
        )
        _, agent_token = await vault.agents.create(ctx, AGENT)
        await vault.grants.create(ctx, {"agent": AGENT, "secret_set": "crash/load/proxy"})
    finally:
        await vault.close()
    return done.operator_token.reveal(), agent_token.reveal()


async def _check_load(settings: Settings, tally: Tally) -> None:
    vault = await Vault.open(settings)
    try:
        for path, version, value in tally.acked_versions:
            entries = await vault.sets.reveal(path, version)
            assert entries["V"].reveal() == value, f"{path} version {version} lost its value"
        async with vault.db.read() as conn:
            ids = {row[0] for row in (await conn.execute(text("SELECT id FROM leases"))).all()}
        lost = tally.acked_mints - ids
        assert not lost, f"acknowledged lease mints lost: {sorted(lost)[:5]}"
        report = await vault.audit.verify()
        assert report["ok"] is True, report["first_bad"]
    finally:
        await vault.close()


def _reuse_spent(url: str, tally: Tally, upstream: FakeUpstream) -> None:
    """Every lease spent (or in flight at the kill) once more: none may go upstream twice."""
    with httpx.Client(base_url=url, timeout=10) as proxy:
        for lease_id, token in tally.spent.items():
            proxy.get(
                f"/proxy/crash/load/proxy/echo/{lease_id}",
                headers={"Authorization": f"Bearer {token}"},
            )
    seen = Counter(s.path for s in upstream.seen)
    twice = [path for path, count in seen.items() if count > 1]
    assert not twice, f"single-use leases reached the upstream twice: {twice[:5]}"


def _wait_for(done: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            return  # the asserts after the round say what did not happen
        time.sleep(0.02)


def _load_round(
    nodes: list[Node],
    victim: Node,
    tokens: tuple[str, str],
    rng: random.Random,
    seed: int,
    upstream: FakeUpstream,
) -> Tally:
    token, agent_token = tokens
    tally = Tally()
    stop, killed = threading.Event(), threading.Event()
    threads = [
        threading.Thread(
            target=_worker,
            args=(n, nodes[n % len(nodes)], agent_token, token, tally, stop, killed, seed),
        )
        for n in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    # Waits, not fixed sleeps: on a loaded machine the clients may take seconds to start,
    # and the kill must land in the middle of the load, then be seen by the victim's
    # clients while every survivor keeps answering.
    _wait_for(lambda: len(tally.working) == WORKERS, "every client got an answer")
    time.sleep(rng.uniform(0.05, 0.6))
    killed.set()  # first: its clients may see the connection drop before kill() returns
    victim.kill()
    _wait_for(
        lambda: (
            tally.refused.get(victim.url, 0) > 0
            and all(tally.answered.get(node.url, 0) > 0 for node in nodes if node is not victim)
        ),
        "the killed node's clients saw an error and every other node answered",
    )
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not tally.wrong, tally.wrong[:5]
    assert tally.refused.get(victim.url, 0) > 0, "the killed node's clients saw no error"
    for node in nodes:
        if node is not victim:
            assert tally.answered.get(node.url, 0) > 0, "the surviving node stopped answering"
    return tally


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


def test_mixed_load_survives_sigkill_of_a_node(
    settings: Settings, backend: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """SQLite: one node, killed and restarted; PostgreSQL: two nodes, one killed."""
    seed = random.randrange(1 << 30)
    print(f"crash load seed {seed} ({backend})")  # rerun a failure with this seed
    rng = random.Random(seed)
    tokens = asyncio.run(_prepare_load(settings, upstream))
    nodes = [Node(settings, {}, tmp_path / "node-a.log")]
    if backend == "postgresql":
        key = settings.resolved_master_key_file.read_text().strip()
        other = Settings(data_dir=tmp_path / "node-b", database_url=settings.database_url)
        nodes.append(Node(other, {"KEYFOB_MASTER_KEY": key}, tmp_path / "node-b.log"))
    for node in nodes:
        node.start(tokens[0])
    started = time.monotonic()
    rounds = 0
    try:
        while rounds < 2 or time.monotonic() - started < LOAD_BUDGET:
            victim = rng.choice(nodes)
            tally = _load_round(nodes, victim, tokens, rng, seed + rounds, upstream)
            victim.start(tokens[0])  # the same port: its old clients come back to it
            asyncio.run(_check_load(settings, tally))
            _reuse_spent(victim.url, tally, upstream)
            rounds += 1
    finally:
        for node in nodes:
            node.kill()  # nothing to wait for: a graceful stop would only cost time
    print(f"crash load: {rounds} kills in {time.monotonic() - started:.1f} s")
    assert rounds >= 2
