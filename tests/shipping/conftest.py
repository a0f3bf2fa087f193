"""Shared pieces of the audit shipping tests: fast retry settings, record makers, waits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Context, Vault

# Small batches so a run spans many; retries and polls in milliseconds so tests are fast.
FAST: dict[str, Any] = {
    "audit_ship_batch": 5,
    "audit_ship_poll": 0.02,
    "audit_ship_retry_initial": 0.01,
    "audit_ship_retry_max": 0.05,
}


def app_client(vault: Vault, token: str | None = None) -> httpx.AsyncClient:
    """The app in-process over ``vault`` (whose shipping the test starts itself)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(vault.settings, vault=vault)),
        base_url="http://keyfob.test",
        headers=headers,
    )


async def operator_token(vault: Vault) -> str:
    """A new operator token of ``vault`` (``/readyz`` tells only an operator why)."""
    _, token = await vault.operators.create_token(Context(actor="operator:test"), "probe")
    return token.reveal()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def make_records(vault: Vault, count: int, *, pause: float = 0.0) -> None:
    """``count`` audit records (failed authentications: one record each)."""
    for n in range(count):
        await vault.core.audit_auth_failure(
            Context(actor="anonymous", client="127.0.0.1"), f"/v1/test/{n}", "unknown", None
        )
        if pause:
            await asyncio.sleep(pause)


async def wait_for(check: Callable[[], Awaitable[bool] | bool], timeout: float = 8.0) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("timed out waiting for audit shipping")
        await asyncio.sleep(0.02)


async def head_seq(vault: Vault) -> int:
    from keyfob.store import audit_log

    async with vault.db.read() as conn:
        head = await audit_log.head(conn)
    assert head is not None
    return head[0]


@pytest.fixture
async def open_shipping_vault(
    settings: Settings,
) -> AsyncIterator[Callable[..., Awaitable[Vault]]]:
    """Initialise a vault whose settings add ``**ship`` (closed after the test)."""
    opened: list[Vault] = []

    async def make(**ship: Any) -> Vault:
        vault, _ = await Vault.initialise(settings.model_copy(update={**FAST, **ship}))
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        await vault.close()
