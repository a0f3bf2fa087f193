"""The agent's client: its grants, minting leases (one, a batch, or under approval), the
dry run, renewing and revoking its own leases. ``AgentClient`` is synchronous,
``AsyncAgentClient`` the same calls for asyncio.

Both authenticate with the agent token (``kfa_…``, from ``token=`` or ``KEYFOB_TOKEN``),
which can only mint: it opens nothing by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from keyfob.sdk.errors import (
    ApprovalDenied,
    ApprovalRequired,
    ApprovalTimeout,
    Denied,
    NotGranted,
    ServerError,
    UnknownSecretSet,
)
from keyfob.sdk.models import (
    Check,
    Grant,
    Lease,
    LeaseRequest,
    grant_of,
    lease_of,
    request_of,
)
from keyfob.sdk.wire import TIMEOUT, AsyncWire, Wire, resolve_trust, segment
from keyfob.secret import Masked, Secret
from keyfob.server_trust import FilePath

AGENT_TOKEN = "an agent token (kfa_…)"  # noqa: S105 - what to set, not a token
POLL_SLICE = 20.0  # seconds per long poll: the server holds at most 30, the client waits 30
APPROVAL_WAIT = 600.0  # a pending request expires after ten minutes anyway
Scope = Literal["request", "workflow"]


def _mint_body(
    secret_set: str,
    scope: str,
    ttl: int | None,
    max_uses: int | None,
    count: int | None,
    reason: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"secret_set": secret_set, "scope": scope}
    for name, value in (("ttl", ttl), ("max_uses", max_uses), ("count", count), ("reason", reason)):
        if value is not None:
            body[name] = value
    return body


def _check_body(
    action: str, secret_set: str | None, method: str | None, path: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action}
    if secret_set is not None:
        body["secret_set"] = secret_set
    if method is not None:
        body["method"] = method.upper()
    if path is not None:
        body["path"] = path
    return body


def _leases(data: Mapping[str, Any], sent_at: float) -> list[Lease]:
    items = data.get("leases")
    if not isinstance(items, list):
        raise ServerError("keyfob answered a batch mint without its leases")
    return [lease_of(item, sent_at) for item in items]


def _token_of(lease: Lease | str) -> Secret[str]:
    return lease.token if isinstance(lease, Lease) else Secret(lease)


def _id_of(lease: Lease | str) -> str:
    return lease.id if isinstance(lease, Lease) else lease


def _settled(request: LeaseRequest, request_id: str) -> Lease | None:
    """The lease once issued; raises if the request can no longer give one."""
    if request.status == "issued" and request.lease is not None:
        return request.lease
    if request.status == "issued":
        raise ApprovalDenied(
            f"lease request {request_id} was already issued to an earlier poll",
            problem={"id": request_id, "status": request.status},
        )
    if request.status in ("denied", "expired"):
        raise ApprovalDenied(
            f"lease request {request_id} on {request.secret_set} is {request.status}",
            problem={"id": request_id, "status": request.status},
        )
    return None


def _unknown_or(exc: NotGranted, secret_set: str, grants: list[Grant]) -> Denied:
    """A ``not_granted`` refusal for a set no grant of the agent lists becomes
    ``UnknownSecretSet`` (keyfob never says whether such a set exists)."""
    if any(g.secret_set == secret_set for g in grants):
        return exc
    return UnknownSecretSet(
        f"secret set {secret_set} is not among this agent's grants "
        "(it does not exist, or it is not granted to this agent)",
        type=exc.type,
        status=exc.status,
        reason=exc.reason,
        problem=exc.problem,
    )


class AgentClient(Masked):
    """Synchronous agent calls to one keyfob server (``addr`` or ``KEYFOB_ADDR``)."""

    shown = ("addr",)

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        *,
        ca_file: FilePath | None = None,
        client_cert: FilePath | None = None,
        client_key: FilePath | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        trust = resolve_trust(ca_file, client_cert, client_key)
        self._wire = Wire(addr, token, AGENT_TOKEN, transport, timeout, trust)
        self.addr = self._wire.addr
        self.verify = self._wire.verify
        self.transport = transport

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._wire.close()

    def proxy_url(self, secret_set: str) -> str:
        """Where requests for ``secret_set`` go: keyfob's proxy route for it."""
        return f"{self.addr}/proxy/{secret_set}"

    def grants(self) -> list[Grant]:
        """This agent's usable grants: set names, key names, limits; never values."""
        _, data = self._wire.call("GET", "/v1/me/grants")
        return [grant_of(item) for item in data.get("items", []) if isinstance(item, dict)]

    def grant(self, secret_set: str) -> Grant:
        """The agent's grant on ``secret_set``; ``UnknownSecretSet`` if none lists it."""
        for grant in self.grants():
            if grant.secret_set == secret_set:
                return grant
        raise UnknownSecretSet(f"secret set {secret_set} is not among this agent's grants")

    @overload
    def mint_lease(
        self,
        secret_set: str,
        *,
        scope: Scope = ...,
        ttl: int | None = ...,
        max_uses: int | None = ...,
        count: None = ...,
        wait: float | None = ...,
    ) -> Lease: ...

    @overload
    def mint_lease(
        self,
        secret_set: str,
        *,
        scope: Scope = ...,
        ttl: int | None = ...,
        max_uses: int | None = ...,
        count: int,
        wait: float | None = ...,
    ) -> list[Lease]: ...

    def mint_lease(
        self,
        secret_set: str,
        *,
        scope: Scope = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
        count: int | None = None,
        wait: float | None = None,
    ) -> Lease | list[Lease]:
        """A lease (``count``: that many, ≤ 100, in one call). Under a grant that needs
        approval: ``ApprovalRequired``, or with ``wait`` seconds, the lease once approved."""
        body = _mint_body(secret_set, scope, ttl, max_uses, count)
        sent_at = time.monotonic()
        try:
            status, data = self._wire.call("POST", "/v1/leases", body=body)
        except NotGranted as exc:
            raise _unknown_or(exc, secret_set, self.grants()) from None
        if count is not None:
            return _leases(data, sent_at)
        if status == 202:
            if wait is None:
                raise ApprovalRequired(
                    f"the grant on {secret_set} needs an operator's approval: "
                    f"wait on lease request {data.get('id')}",
                    status=202,
                    problem=data,
                )
            return self.wait_for_approval(str(data.get("id")), timeout=wait)
        return lease_of(data, sent_at)

    def request_approval(
        self,
        secret_set: str,
        *,
        scope: Scope = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
        reason: str | None = None,
    ) -> LeaseRequest:
        """Ask for a lease; ``status`` is ``pending`` under approval, else ``issued``.
        ``reason`` is shown to the person who approves."""
        sent_at = time.monotonic()
        body = _mint_body(secret_set, scope, ttl, max_uses, None, reason)
        try:
            status, data = self._wire.call("POST", "/v1/leases", body=body)
        except NotGranted as exc:
            raise _unknown_or(exc, secret_set, self.grants()) from None
        if status == 202:
            return request_of(data, sent_at)
        lease = lease_of(data, sent_at)
        return LeaseRequest("", lease.secret_set, "issued", lease.expires_at, lease)

    def poll(self, request_id: str, wait: float = 0) -> LeaseRequest:
        """The request now (``wait``: hold up to that many seconds, ≤ 30, while pending)."""
        sent_at = time.monotonic()
        path = f"/v1/me/lease-requests/{segment(request_id)}"
        _, data = self._wire.call("GET", path, params={"wait": f"{min(wait, 30):g}"})
        return request_of(data, sent_at)

    def wait_for_approval(
        self, request: LeaseRequest | str, timeout: float = APPROVAL_WAIT
    ) -> Lease:
        """The lease once an operator approves; ``ApprovalDenied`` or ``ApprovalTimeout``."""
        if isinstance(request, LeaseRequest):
            if request.lease is not None:
                return request.lease
            request = request.id
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            view = self.poll(request, max(0.0, min(left, POLL_SLICE)))
            lease = _settled(view, request)
            if lease is not None:
                return lease
            if deadline - time.monotonic() <= 0:
                raise ApprovalTimeout(
                    f"lease request {request} is still pending after {timeout:g} s",
                    problem={"id": request, "status": view.status},
                )

    def check(
        self,
        lease: Lease | str,
        *,
        action: str = "proxy",
        secret_set: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> Check:
        """The dry run: would ``lease`` allow this use? Consumes nothing."""
        body = _check_body(action, secret_set, method, path)
        _, data = self._wire.call("POST", "/v1/leases/check", body=body, bearer=_token_of(lease))
        return Check(data.get("allowed") is True, data.get("reason"), data.get("lease") or {})

    def mint_proxy_credential(self, secret_sets: list[str], *, ttl: int | None = None) -> Lease:
        """A multi-set workflow lease: the forward proxy's credential over ``secret_sets``
        (``Proxy-Authorization: Basic base64("keyfob:" + token)``)."""
        body: dict[str, Any] = {"secret_sets": list(secret_sets), "scope": "workflow"}
        if ttl is not None:
            body["ttl"] = ttl
        sent_at = time.monotonic()
        _, data = self._wire.call("POST", "/v1/leases", body=body)
        return lease_of({**data, "secret_set": ",".join(secret_sets)}, sent_at)

    def ca_certificate(self) -> str:
        """keyfob's CA certificate(s), PEM, for clients of the forward proxy."""
        _, data = self._wire.call("GET", "/v1/ca")
        return str(data.get("certificate", ""))

    def renew(self, lease: Lease, ttl: int | None = None) -> Lease:
        """Push out the expiry of one of the agent's workflow leases (capped by its grant);
        the token stays the same, so a process holding it keeps working."""
        sent_at = time.monotonic()
        body = {"ttl": ttl} if ttl is not None else {}
        _, data = self._wire.call("POST", f"/v1/me/leases/{segment(lease.id)}/renew", body=body)
        return lease_of({**data, "token": lease.token.reveal()}, sent_at)

    def revoke(self, lease: Lease | str) -> None:
        """Revoke one of the agent's own leases; its next use fails, on every node."""
        self._wire.call("DELETE", f"/v1/me/leases/{segment(_id_of(lease))}")


class AsyncAgentClient(Masked):
    """``AgentClient``'s calls for asyncio."""

    shown = ("addr",)

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        *,
        ca_file: FilePath | None = None,
        client_cert: FilePath | None = None,
        client_key: FilePath | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        trust = resolve_trust(ca_file, client_cert, client_key)
        self._wire = AsyncWire(addr, token, AGENT_TOKEN, transport, timeout, trust)
        self.addr = self._wire.addr
        self.verify = self._wire.verify
        self.transport = transport

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._wire.aclose()

    def proxy_url(self, secret_set: str) -> str:
        return f"{self.addr}/proxy/{secret_set}"

    async def grants(self) -> list[Grant]:
        _, data = await self._wire.call("GET", "/v1/me/grants")
        return [grant_of(item) for item in data.get("items", []) if isinstance(item, dict)]

    async def grant(self, secret_set: str) -> Grant:
        for grant in await self.grants():
            if grant.secret_set == secret_set:
                return grant
        raise UnknownSecretSet(f"secret set {secret_set} is not among this agent's grants")

    async def mint_many(
        self,
        secret_set: str,
        count: int,
        *,
        scope: Scope = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
    ) -> list[Lease]:
        """``count`` leases (≤ 100) in one call."""
        body = _mint_body(secret_set, scope, ttl, max_uses, count)
        sent_at = time.monotonic()
        try:
            _, data = await self._wire.call("POST", "/v1/leases", body=body)
        except NotGranted as exc:
            raise _unknown_or(exc, secret_set, await self.grants()) from None
        return _leases(data, sent_at)

    async def mint_lease(
        self,
        secret_set: str,
        *,
        scope: Scope = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
        wait: float | None = None,
    ) -> Lease:
        """One lease; under approval ``ApprovalRequired``, or with ``wait`` the approved one."""
        request = await self.request_approval(secret_set, scope=scope, ttl=ttl, max_uses=max_uses)
        if request.lease is not None:
            return request.lease
        if wait is None:
            raise ApprovalRequired(
                f"the grant on {secret_set} needs an operator's approval: "
                f"wait on lease request {request.id}",
                status=202,
                problem={"id": request.id, "status": request.status},
            )
        return await self.wait_for_approval(request.id, timeout=wait)

    async def request_approval(
        self,
        secret_set: str,
        *,
        scope: Scope = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
        reason: str | None = None,
    ) -> LeaseRequest:
        sent_at = time.monotonic()
        body = _mint_body(secret_set, scope, ttl, max_uses, None, reason)
        try:
            status, data = await self._wire.call("POST", "/v1/leases", body=body)
        except NotGranted as exc:
            raise _unknown_or(exc, secret_set, await self.grants()) from None
        if status == 202:
            return request_of(data, sent_at)
        lease = lease_of(data, sent_at)
        return LeaseRequest("", lease.secret_set, "issued", lease.expires_at, lease)

    async def poll(self, request_id: str, wait: float = 0) -> LeaseRequest:
        sent_at = time.monotonic()
        path = f"/v1/me/lease-requests/{segment(request_id)}"
        _, data = await self._wire.call("GET", path, params={"wait": f"{min(wait, 30):g}"})
        return request_of(data, sent_at)

    async def wait_for_approval(
        self, request: LeaseRequest | str, timeout: float = APPROVAL_WAIT
    ) -> Lease:
        if isinstance(request, LeaseRequest):
            if request.lease is not None:
                return request.lease
            request = request.id
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            view = await self.poll(request, max(0.0, min(left, POLL_SLICE)))
            lease = _settled(view, request)
            if lease is not None:
                return lease
            if deadline - time.monotonic() <= 0:
                raise ApprovalTimeout(
                    f"lease request {request} is still pending after {timeout:g} s",
                    problem={"id": request, "status": view.status},
                )
            await asyncio.sleep(0)

    async def check(
        self,
        lease: Lease | str,
        *,
        action: str = "proxy",
        secret_set: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> Check:
        body = _check_body(action, secret_set, method, path)
        _, data = await self._wire.call(
            "POST", "/v1/leases/check", body=body, bearer=_token_of(lease)
        )
        return Check(data.get("allowed") is True, data.get("reason"), data.get("lease") or {})

    async def renew(self, lease: Lease, ttl: int | None = None) -> Lease:
        sent_at = time.monotonic()
        body = {"ttl": ttl} if ttl is not None else {}
        path = f"/v1/me/leases/{segment(lease.id)}/renew"
        _, data = await self._wire.call("POST", path, body=body)
        return lease_of({**data, "token": lease.token.reveal()}, sent_at)

    async def revoke(self, lease: Lease | str) -> None:
        await self._wire.call("DELETE", f"/v1/me/leases/{segment(_id_of(lease))}")
