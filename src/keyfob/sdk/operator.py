"""``OperatorClient``: automation over the operator API (``kfo_…`` token) — secret sets,
agents, grants, leases, approvals and audit — one thin method per route, JSON back.

Secret values go in (``entries``) and never come back. A new agent's token is returned
once, wrapped in ``Secret`` so that printing the answer does not print the token.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from keyfob.sdk.wire import TIMEOUT, Wire, resolve_trust, segment
from keyfob.secret import Masked, Secret
from keyfob.server_trust import FilePath

Json = dict[str, Any]
OPERATOR_TOKEN = "an operator token (kfo_…)"  # noqa: S105 - what to set, not a token


def _set_path(secret_set: str) -> str:
    return "/".join(segment(part) for part in secret_set.split("/"))


def _items(data: Json) -> list[Json]:
    return [item for item in data.get("items", []) if isinstance(item, dict)]


def _with_secret_token(data: Json) -> Json:
    token = data.get("token")
    return {**data, "token": Secret(token)} if isinstance(token, str) else data


def _given(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class OperatorClient(Masked):
    """Synchronous operator calls to one keyfob server (``addr`` or ``KEYFOB_ADDR``)."""

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
        self._wire = Wire(addr, token, OPERATOR_TOKEN, transport, timeout, trust)
        self.addr = self._wire.addr

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._wire.close()

    def _get(self, path: str, **params: Any) -> Json:
        return self._wire.call("GET", path, params=_given(**params))[1]

    def _post(self, path: str, body: Mapping[str, Any] | None = None) -> Json:
        return self._wire.call("POST", path, body=body or {})[1]

    # -- secret sets ------------------------------------------------------------------

    def create_set(
        self,
        secret_set: str,
        entries: Mapping[str, str],
        *,
        profile: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Json:
        """Create ``provider/environment/name`` with ``entries`` (values are write-only)."""
        provider, environment, name = secret_set.split("/")
        body: Json = {
            "provider": provider,
            "environment": environment,
            "name": name,
            "entries": dict(entries),
            "labels": dict(labels or {}),
        }
        if profile is not None:
            body["profile"] = dict(profile)
        return self._post("/v1/secret-sets", body)

    def sets(self, **filters: Any) -> list[Json]:
        return _items(self._get("/v1/secret-sets", **filters))

    def get_set(self, secret_set: str) -> Json:
        return self._get(f"/v1/secret-sets/{_set_path(secret_set)}")

    def update_set(self, secret_set: str, entries: Mapping[str, str | None], **fields: Any) -> Json:
        """A new version: ``KEY: value`` sets a key, ``KEY: None`` removes it."""
        body = {"entries": dict(entries), **fields}
        return self._wire.call("PATCH", f"/v1/secret-sets/{_set_path(secret_set)}", body=body)[1]

    def delete_set(self, secret_set: str) -> Json:
        return self._wire.call("DELETE", f"/v1/secret-sets/{_set_path(secret_set)}")[1]

    # -- agents and grants ------------------------------------------------------------

    def create_agent(self, name: str) -> Json:
        """A new agent; its ``token`` is a ``Secret`` (``.reveal()`` it once, to hand over)."""
        return _with_secret_token(self._post("/v1/agents", {"name": name}))

    def agents(self) -> list[Json]:
        return _items(self._get("/v1/agents"))

    def delete_agent(self, agent: str) -> Json:
        return self._wire.call("DELETE", f"/v1/agents/{segment(agent)}")[1]

    def grant(self, agent: str, secret_set: str, **constraints: Any) -> Json:
        """Grant ``agent`` use of ``secret_set`` (constraints as in ``POST /v1/grants``)."""
        return self._post("/v1/grants", {"agent": agent, "secret_set": secret_set, **constraints})

    def grants(self, **filters: Any) -> list[Json]:
        return _items(self._get("/v1/grants", **filters))

    def update_grant(self, grant_id: str, **constraints: Any) -> Json:
        return self._wire.call("PATCH", f"/v1/grants/{segment(grant_id)}", body=constraints)[1]

    def revoke_grant(self, grant_id: str) -> Json:
        return self._wire.call("DELETE", f"/v1/grants/{segment(grant_id)}")[1]

    # -- leases and approvals ---------------------------------------------------------

    def leases(self, **filters: Any) -> list[Json]:
        return _items(self._get("/v1/leases", **filters))

    def revoke_lease(self, lease_id: str) -> Json:
        return self._wire.call("DELETE", f"/v1/leases/{segment(lease_id)}")[1]

    def lease_requests(self, status: str | None = "pending") -> list[Json]:
        return _items(self._get("/v1/lease-requests", status=status or ""))

    def approve(self, request_id: str) -> Json:
        return self._post(f"/v1/lease-requests/{segment(request_id)}/approve")

    def deny(self, request_id: str) -> Json:
        return self._post(f"/v1/lease-requests/{segment(request_id)}/deny")

    # -- audit ------------------------------------------------------------------------

    def audit(self, **filters: Any) -> list[Json]:
        """One page of audit events (filters as ``GET /v1/audit``: actor, action, …)."""
        return _items(self._get("/v1/audit", **filters))

    def audit_events(self, **filters: Any) -> Iterator[Json]:
        """Every matching event, oldest first, page after page."""
        after = 0
        while True:
            data = self._get("/v1/audit", **{**filters, "after": after, "order": "asc"})
            page = _items(data)
            yield from page
            cursor = data.get("next_cursor")
            if not cursor or not page:
                return
            after = int(cursor)

    def verify_audit(self) -> Json:
        return self._get("/v1/audit/verify")
