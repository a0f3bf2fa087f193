"""The shapes the outside world sees: names, fingerprints, versions — never values.

Services return these frozen dataclasses; the API serialises them (``dataclasses.asdict``
gives the JSON field names, in order) and the dashboard reads their attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keyfob.store import KeyMeta, SetRow, VersionRow

__all__ = [
    "AgentDeleted",
    "AgentView",
    "GrantView",
    "KeyMeta",
    "KeyStatus",
    "KeyTerm",
    "MyGrantView",
    "Purged",
    "Rewrapped",
    "Rotated",
    "SetView",
    "TermRetired",
    "VersionView",
    "View",
    "set_view",
    "version_view",
]


class View:
    """Base of every view."""

    __slots__ = ()


@dataclass(frozen=True)
class SetView(View):
    id: str
    path: str
    provider: str
    environment: str
    name: str
    labels: dict[str, str]
    version: int
    keys: tuple[KeyMeta, ...]
    profile: dict[str, Any] | None
    created_at: str
    updated_at: str
    deleted_at: str | None
    exported_at: str | None
    # An OAuth set whose provider answered invalid_grant: it needs a new refresh token.
    needs_reconnect: bool = False


@dataclass(frozen=True)
class VersionView(View):
    version: int
    created_at: str
    actor: str
    reason: str
    rollback_of: int | None
    keys: tuple[str, ...]
    kek_term: int


@dataclass(frozen=True)
class Purged(View):
    purged: str
    versions: int


@dataclass(frozen=True)
class AgentView(View):
    id: str
    name: str
    status: str
    disabled_at: str | None
    allowed_networks: list[str] | None
    client_cert_sha256: str | None
    created_at: str
    created_by: str
    updated_at: str


@dataclass(frozen=True)
class AgentDeleted(AgentView):
    deleted: bool = True


@dataclass(frozen=True)
class GrantView(View):
    """A grant; its constraint fields are the spec's (a contract test keeps them so)."""

    id: str
    agent_id: str
    agent: str | None
    secret_set: str
    keys: list[str] | None
    actions: list[str]
    not_before: str | None
    expires_at: str | None
    scopes: list[str]
    max_lease_ttl: int
    max_lease_uses: int | None
    rate_limit: int | None
    max_uses: int | None
    uses: int
    methods: list[str] | None
    paths: list[str] | None
    approval: str
    budgets: list[dict[str, Any]] | None
    created_at: str
    created_by: str
    updated_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class MyGrantView(View):
    """A grant as its agent sees it: the key names resolved, nothing of other agents."""

    grant_id: str
    secret_set: str
    keys: list[str]
    actions: list[str]
    not_before: str | None
    expires_at: str | None
    scopes: list[str]
    max_lease_ttl: int
    max_lease_uses: int | None
    rate_limit: int | None
    max_uses: int | None
    methods: list[str] | None
    paths: list[str] | None
    approval: str
    budgets: list[dict[str, Any]] | None
    uses: int
    # What an agent (or a model through MCP) needs to aim a request: uses left under
    # ``max_uses`` (None: no cap), and where the proxy sends it.
    remaining_uses: int | None
    base_url: str | None
    hosts: list[str]
    # What ``keyfob run`` sets for the set's preset (templates over {proxy_url}, {lease}).
    env: dict[str, str]


@dataclass(frozen=True)
class KeyTerm(View):
    term: int
    status: str
    created_at: str
    retired_at: str | None
    records: int


@dataclass(frozen=True)
class KeyStatus(View):
    active_term: int
    terms: tuple[KeyTerm, ...]
    audit_public_key: str
    # The master key provider and where its key is (`provider`: file, env or pkcs11).
    master_key: dict[str, str]


@dataclass(frozen=True)
class Rotated(View):
    term: int


@dataclass(frozen=True)
class Rewrapped(View):
    rewrapped: int
    term: int


@dataclass(frozen=True)
class TermRetired(View):
    term: int
    status: str = "retired"


def set_view(row: SetRow, current: VersionRow | None, needs_reconnect: bool = False) -> SetView:
    return SetView(
        id=row.id,
        path=row.path,
        provider=row.provider,
        environment=row.environment,
        name=row.name,
        labels=row.labels,
        version=row.version,
        keys=current.keys if current else (),
        profile=row.profile,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        exported_at=row.exported_at,
        needs_reconnect=needs_reconnect,
    )


def version_view(row: VersionRow) -> VersionView:
    return VersionView(
        version=row.version,
        created_at=row.created_at,
        actor=row.actor,
        reason=row.reason,
        rollback_of=row.rollback_of,
        keys=tuple(k.name for k in row.keys),
        kek_term=row.kek_term,
    )
