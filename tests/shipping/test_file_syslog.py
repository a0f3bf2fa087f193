"""Audit shipping to a rotated JSONL file and to syslog (RFC 5424 over UDP, TCP, TLS)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from keyfob.app import asgi as app_module
from keyfob.app.audit_sinks import build_sinks
from keyfob.audit import ShippedChain
from keyfob.settings import Settings
from keyfob.store import audit_ship
from keyfob.vault import Vault
from tests.shipping.conftest import FAST, free_port, head_seq, make_records, wait_for
from tests.support.certs import TestCa


def records_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def shipped_up_to(path: Path, seq: int) -> bool:
    """The file's last complete record is ``seq`` (it may exist but be empty, or end in a
    line still being written, while the shipper works, or be missing for a moment while it
    is rotated)."""
    try:
        lines = path.read_text().split("\n")[:-1]
    except FileNotFoundError:
        return False
    return bool(lines) and json.loads(lines[-1])["seq"] == seq


async def test_jsonl_file_rotates_and_keeps_the_chain_across_files(
    open_shipping_vault: Callable[..., Awaitable[Vault]], tmp_path: Path
) -> None:
    target = tmp_path / "ship" / "audit.jsonl"
    vault = await open_shipping_vault(
        audit_ship_file=target, audit_ship_file_max_bytes=2048, audit_ship_file_backups=3
    )
    await vault.shipping.start(build_sinks(vault.settings))
    await make_records(vault, 40)
    last = await head_seq(vault)
    await wait_for(lambda: shipped_up_to(target, last))

    files = [target.with_name(f"audit.jsonl.{n}") for n in (3, 2, 1)] + [target]
    assert all(f.exists() for f in files)
    assert not target.with_name("audit.jsonl.4").exists()  # the oldest were dropped
    for f in files:
        assert f.stat().st_size <= 2048
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    shipped = [r for f in files for r in records_in(f)]
    # The kept files hold one unbroken stretch of the chain, up to the head: a receiver
    # that starts mid-log verifies from the first record it has.
    first = shipped[0]
    assert first["seq"] > 1
    chain = ShippedChain(after=(first["seq"] - 1, first["prev_hash"]))
    assert chain.feed_all(shipped) == len(shipped)
    assert chain.ok, chain.first_bad
    assert chain.count == last
    assert chain.duplicates == 0
    assert (await vault.audit.verify())["head"] == chain.head
    # /metrics: the lag falls to 0 once the last batch is recorded as delivered.
    await wait_for(
        lambda: 'keyfob_audit_ship_lag_records{sink="file"} 0.0' in vault.metrics.render().decode()
    )
    metrics = vault.metrics.render().decode()
    assert f'keyfob_audit_shipped_records_total{{sink="file"}} {float(last)}' in metrics


SYSLOG = re.compile(
    rb'<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) keyfob (?P<pid>\d+) (?P<msgid>\S+) '
    rb'\[keyfob@32473 seq="(?P<seq>\d+)" prev_hash="(?P<prev>[0-9a-f]{64})" '
    rb'hash="(?P<hash>[0-9a-f]{64})"\] \xef\xbb\xbf(?P<msg>\{.*\})',
    re.DOTALL,
)


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


async def test_syslog_udp_messages_are_rfc5424_with_the_chain_in_structured_data(
    open_shipping_vault: Callable[..., Awaitable[Vault]],
) -> None:
    port = free_port()
    transport, listener = await asyncio.get_running_loop().create_datagram_endpoint(
        Datagrams, local_addr=("127.0.0.1", port)
    )
    try:
        vault = await open_shipping_vault(audit_ship_syslog=f"udp://127.0.0.1:{port}")
        await vault.shipping.start(build_sinks(vault.settings))
        await make_records(vault, 12)
        last = await head_seq(vault)
        await wait_for(lambda: len(listener.received) >= last)
    finally:
        transport.close()

    chain = ShippedChain()
    outcomes = set()
    for datagram in listener.received:
        match = SYSLOG.fullmatch(datagram)
        assert match, datagram[:200]
        record = json.loads(match["msg"])
        # Facility 13 (log audit): informational for ok, notice for denied and the rest.
        severity = 6 if record["outcome"] == "ok" else 5
        assert int(match["pri"]) == 13 * 8 + severity
        assert match["msgid"].decode() == record["action"]
        assert int(match["seq"]) == record["seq"]
        assert match["prev"].decode() == record["prev_hash"]
        assert match["hash"].decode() == record["hash"]
        assert match["ts"].decode().endswith("Z")
        assert chain.feed(record)
        outcomes.add(record["outcome"])
    assert chain.ok, chain.first_bad
    assert chain.count == last
    assert outcomes >= {"ok", "denied"}  # both severities were seen


async def test_the_serving_process_ships_from_start_up_and_stops_cleanly(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``create_app`` without a vault (as ``keyfob serve``) starts shipping in its lifespan."""
    monkeypatch.setattr(app_module, "settle_heap", lambda: None)  # leave the test's gc alone
    target = tmp_path / "ship" / "audit.jsonl"
    served = settings.model_copy(update={**FAST, "audit_ship_file": target})
    vault, _ = await Vault.initialise(served)
    await vault.close()
    app = app_module.create_app(served)
    async with app.router.lifespan_context(app.api):
        running: Vault = app.state.vault
        await make_records(running, 3)
        last = await head_seq(running)
        await wait_for(lambda: shipped_up_to(target, last))
    # Stopped: the claim was given up, so another node could take over at once.
    reopened = await Vault.open(served)
    try:
        async with reopened.db.read() as conn:
            cursor = await audit_ship.get(conn, "file")
    finally:
        await reopened.close()
    assert cursor is not None
    assert cursor.seq == last
    assert cursor.claimed_by is None


class Frames:
    """A syslog receiver over TCP or TLS: octet-counted frames (RFC 6587, RFC 5425)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = await reader.readuntil(b" ")
                self.frames.append(await reader.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
async def test_syslog_tcp_and_tls_use_octet_counting(
    open_shipping_vault: Callable[..., Awaitable[Vault]], tmp_path: Path, scheme: str
) -> None:
    """Over TCP and TLS each message is framed as ``<length> <message>``; over TLS the
    receiver's certificate is verified against the configured CA file."""
    receiver = Frames()
    frames = receiver.frames
    ca = TestCa(tmp_path / "ca")
    tls = ca.server("syslog", ["127.0.0.1"]) if scheme == "tls" else None
    port = free_port()
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", port, ssl=tls)
    try:
        vault = await open_shipping_vault(
            audit_ship_syslog=f"{scheme}://127.0.0.1:{port}",
            audit_ship_syslog_ca_file=ca.ca_file,
        )
        await vault.shipping.start(build_sinks(vault.settings))
        await make_records(vault, 6)
        last = await head_seq(vault)
        await wait_for(lambda: len(frames) >= last)
    finally:
        server.close()
        await server.wait_closed()
    matches = [SYSLOG.fullmatch(f) for f in frames]
    assert all(matches), frames
    assert [int(m["seq"]) for m in matches if m] == list(range(1, last + 1))
    chain = ShippedChain()
    assert chain.feed_all(json.loads(m["msg"]) for m in matches if m) == last
    assert chain.ok


async def test_syslog_over_tls_refuses_a_receiver_it_does_not_trust(
    open_shipping_vault: Callable[..., Awaitable[Vault]], tmp_path: Path
) -> None:
    """A receiver whose certificate no trusted CA signed gets nothing; the sink says why."""
    receiver = Frames()
    tls = TestCa(tmp_path / "untrusted").server("syslog", ["127.0.0.1"])
    port = free_port()
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", port, ssl=tls)
    try:
        vault = await open_shipping_vault(audit_ship_syslog=f"tls://127.0.0.1:{port}")
        await vault.shipping.start(build_sinks(vault.settings))
        await make_records(vault, 3)

        async def failing() -> str | None:
            (state,) = await vault.shipping.status()
            return state["problem"] if state["problem"] and "Cert" in state["problem"] else None

        problem = None
        for _ in range(200):
            problem = await failing()
            if problem:
                break
            await asyncio.sleep(0.02)
    finally:
        server.close()
        await server.wait_closed()
    assert problem is not None
    assert "SSLCertVerificationError sending to syslog at tls://127.0.0.1" in problem
    assert receiver.frames == []
