"""Nothing acknowledged is lost when the writer is killed with SIGKILL, again and again."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from tests.support.server import env_for

WRITER = Path(__file__).parent / "support" / "crash_writer.py"
SET = "crash/test/writer"
KILLS = 22

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
    """Start a writer, let it write for a random moment, SIGKILL it; return its ACKs."""
    child = subprocess.Popen(
        [sys.executable, str(WRITER), SET, str(first)],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        ready = child.stdout.readline()
        assert ready == b"READY\n", (ready, child.stderr.read() if child.stderr else b"")
        time.sleep(rng.uniform(0.05, 0.4))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    output = child.stdout.read()
    child.stdout.close()
    if child.stderr is not None:
        child.stderr.close()
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
    rng = random.Random()
    acked: list[tuple[int, str]] = []
    started = time.monotonic()

    for round_ in range(KILLS):
        acked.extend(run_and_kill(settings, (round_ + 1) * 1_000_000, rng))

    assert len(acked) >= KILLS, "the writers hardly wrote: the test proves nothing"
    versions = [version for version, _ in acked]
    assert versions == sorted(set(versions)), "versions must only move forward"
    asyncio.run(check(settings, acked))
    assert time.monotonic() - started < 120
