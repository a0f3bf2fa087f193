"""Audit shipping to an HTTPS webhook survives the receiver going away mid-stream.

The receiver (aiohttp, HTTPS on loopback, a throwaway CA) checks the bearer token and
the body's HMAC, and verifies the chain as a SIEM would (``ShippedChain``). It drops
the connection after taking one batch (so that batch's answer never arrives) and stays
down while records keep committing; ``/readyz`` says so; once it is back, every record
arrives in order, re-deliveries stay within one batch, and the chain verifies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from keyfob.app.audit_sinks import build_sinks
from keyfob.audit import ShippedChain
from keyfob.vault import Vault
from tests.conftest import CANARY, make_set
from tests.shipping.conftest import (
    FAST,
    app_client,
    free_port,
    head_seq,
    make_records,
    operator_token,
    wait_for,
)
from tests.support.certs import loopback_tls

TOKEN = "webhook-bearer-6c1d0e"
SECRET = "webhook-hmac-key-93be1f"
PATH_TOKEN = "T0KEN-IN-PATH-4b7a"  # webhook URLs often carry a token in the path


class Receiver:
    """A SIEM's webhook endpoint: checks auth, verifies the chain, can crash on cue."""

    def __init__(self, port: int, tls: ssl.SSLContext) -> None:
        self.port = port
        self.tls = tls
        self.chain = ShippedChain()
        self.arrivals: list[int] = []
        self.bodies: list[bytes] = []
        self.crash_after: int | None = None
        self.refused = 0
        self.running = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{rest:.*}", self._post)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.tls).start()
        self._runner = runner
        self.running = True

    async def stop(self) -> None:
        self.running = False
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _post(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        signature = request.headers.get("X-Keyfob-Signature", "")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}" or not hmac.compare_digest(
            signature, expected
        ):
            self.refused += 1
            return web.Response(status=401)
        self.bodies.append(body)
        for record in json.loads(body)["records"]:
            self.arrivals.append(record["seq"])
            self.chain.feed(record)
        if self.crash_after is not None and len(self.arrivals) >= self.crash_after:
            # Mid-stream: the batch arrived but its answer never does; then down for a while.
            self.crash_after = None
            assert request.transport is not None
            request.transport.close()
            asyncio.get_running_loop().create_task(self.stop())
        return web.Response(status=204)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    return loopback_tls(tmp_path / "pki")


@pytest.fixture
async def receiver(pki: tuple[Path, ssl.SSLContext]) -> AsyncIterator[Receiver]:
    """A receiver on a free loopback port, not yet started; stopped after the test."""
    receiver = Receiver(free_port(), pki[1])
    try:
        yield receiver
    finally:
        await receiver.stop()


async def test_receiver_stopped_mid_stream_gets_every_record_in_order(
    open_shipping_vault: Callable[..., Awaitable[Vault]],
    pki: tuple[Path, ssl.SSLContext],
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca_file = pki[0]
    vault = await open_shipping_vault(
        audit_ship_webhook=f"https://127.0.0.1:{receiver.port}/hook/{PATH_TOKEN}",
        audit_ship_webhook_ca_file=ca_file,
        audit_ship_webhook_token=SecretStr(TOKEN),
        audit_ship_webhook_secret=SecretStr(SECRET),
    )
    await receiver.start()
    receiver.crash_after = 12
    await vault.shipping.start(build_sinks(vault.settings))
    async with app_client(vault, await operator_token(vault)) as http, app_client(vault) as anon:
        producer = asyncio.create_task(make_records(vault, 40, pause=0.005))
        await wait_for(lambda: receiver.crash_after is None and not receiver.running)

        # Down: the vault answers ready for itself but says what is wrong with shipping.
        async def degraded() -> dict[str, Any] | None:
            answer = await http.get("/readyz")
            assert answer.status_code == 200
            body: dict[str, Any] = answer.json()
            return body if body["status"] == "degraded" else None

        await wait_for(lambda: degraded_now(degraded))
        body = await degraded()
        assert body is not None
        (problem,) = body["degraded"]
        assert problem.startswith("audit shipping to webhook is ")
        assert " records behind since " in problem
        assert re.search(
            rf"last error: (ServerDisconnected|ClientConnector)Error reaching "
            rf"https://127\.0\.0\.1:{receiver.port}$",
            problem,
        ), problem
        (state,) = body["audit_shipping"]
        assert state["sink"] == "webhook"
        assert state["behind"] > 0
        assert state["failing_since"] is not None
        # Without an operator token: degraded, and not which sink, where, or what failed.
        anonymous = await anon.get("/readyz")
        assert (anonymous.status_code, anonymous.json()) == (200, {"status": "degraded"})
        await producer
        # More records while it is down, one holding a secret set made with the canary.
        created = await vault_set_with_canary(vault)
        assert created

        await receiver.start()
        last = await head_seq(vault)
        await wait_for(lambda: receiver.chain.count == last)

        # The receiver holds a batch before the shipper has read its answer and moved
        # its cursor: wait for the cursor, not for a fixed time.
        async def caught_up() -> dict[str, Any] | None:
            answer = (await http.get("/readyz")).json()
            return answer if answer["audit_shipping"][0]["behind"] == 0 else None

        await wait_for(lambda: degraded_now(caught_up))
        ready = (await http.get("/readyz")).json()
    assert receiver.chain.ok, receiver.chain.first_bad
    assert receiver.refused == 0
    # Every record, in order: what arrived, duplicates removed, is 1 … last.
    assert sorted(set(receiver.arrivals)) == list(range(1, last + 1))
    # At least once: the batch whose answer was lost came again, and nothing older.
    assert receiver.chain.duplicates >= 1
    assert receiver.chain.farthest_back <= FAST["audit_ship_batch"]
    # The receiver's chain is the vault's own.
    verified = await vault.audit.verify()
    assert verified["ok"]
    assert (verified["count"], verified["head"]) == (receiver.chain.count, receiver.chain.head)
    assert ready["status"] == "ready"
    assert ready["degraded"] == []
    assert ready["audit_shipping"][0]["behind"] == 0
    # No secret value, token, signing key or URL path anywhere shipped or said.
    shipped = b"".join(receiver.bodies)
    for secret in (CANARY, TOKEN, SECRET, PATH_TOKEN):
        assert secret.encode() not in shipped
        assert secret not in json.dumps(body)
        assert secret not in caplog.text


async def degraded_now(probe: Callable[[], Awaitable[dict[str, Any] | None]]) -> bool:
    return await probe() is not None


async def vault_set_with_canary(vault: Vault) -> bool:
    """A secret set holding the canary, made through the API (audited: secret_set.create)."""
    from keyfob.vault import Context

    _, token = await vault.operators.create_token(Context(actor="operator:test"), "ship-test")
    async with app_client(vault, token.reveal()) as http:
        answer = await http.post("/v1/secret-sets", json=make_set())
    return answer.status_code == 201
