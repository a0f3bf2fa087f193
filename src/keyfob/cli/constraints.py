"""Grant constraints as options: shared by ``grant create`` and ``grant update``.

Each option maps to one field of the grant body; only options that were given are
sent, so ``update`` changes exactly what the user named. ``--ttl`` is client-side sugar
for ``expires_at`` (now + duration, UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

from keyfob.cli.context import CliState
from keyfob.cli.entries import check_key_names
from keyfob.cli.errors import CliError
from keyfob.cli.output import joined, print_fields, when


class Action(StrEnum):
    PROXY = "proxy"
    EXPORT = "export"


class Scope(StrEnum):
    REQUEST = "request"
    WORKFLOW = "workflow"


class Approval(StrEnum):
    NONE = "none"
    REQUIRED = "required"


class Clearable(StrEnum):
    """Constraints ``grant update --clear`` can remove (back to "no limit" or "every key")."""

    KEYS = "keys"
    NOT_BEFORE = "not-before"
    EXPIRES_AT = "expires-at"
    MAX_LEASE_USES = "max-lease-uses"
    RATE_LIMIT = "rate-limit"
    MAX_USES = "max-uses"
    METHODS = "methods"
    PATHS = "paths"

    @property
    def field(self) -> str:
        return self.value.replace("-", "_")


Keys = Annotated[
    list[str] | None,
    typer.Option("--key", metavar="NAME", help="Allow only this key (repeatable; default all)."),
]
Actions = Annotated[
    list[Action] | None,
    typer.Option(
        "--action", help="proxy (default) and/or export; export hands out plaintext (repeatable)."
    ),
]
Scopes = Annotated[
    list[Scope] | None,
    typer.Option("--scope", help="Lease scopes the agent may mint (repeatable; default request)."),
]
NotBefore = Annotated[
    str | None,
    typer.Option(
        "--not-before", metavar="TIME", help="Start of validity, RFC 3339 (no offset: UTC)."
    ),
]
ExpiresAt = Annotated[
    str | None,
    typer.Option(
        "--expires-at", metavar="TIME", help="End of validity, RFC 3339 (no offset: UTC)."
    ),
]
Ttl = Annotated[
    str | None,
    typer.Option(
        "--ttl", metavar="DURATION", help="Valid for this long from now: 90s, 15m, 2h, 7d, 1h30m."
    ),
]
MaxLeaseTtl = Annotated[
    int | None,
    typer.Option("--max-lease-ttl", metavar="SECONDS", min=1, help="Ceiling on a lease's TTL."),
]
MaxLeaseUses = Annotated[
    int | None,
    typer.Option("--max-lease-uses", metavar="N", min=1, help="Cap on a workflow lease's uses."),
]
RateLimit = Annotated[
    int | None,
    typer.Option("--rate-limit", metavar="N", min=1, help="Uses per minute across all leases."),
]
MaxUses = Annotated[
    int | None, typer.Option("--max-uses", metavar="N", min=1, help="Uses over the grant's life.")
]
Methods = Annotated[
    list[str] | None,
    typer.Option("--method", metavar="M", help="Allowed HTTP method (repeatable; default any)."),
]
Paths = Annotated[
    list[str] | None,
    typer.Option(
        "--path", metavar="PATTERN", help="Allowed path, * one segment, ** any (repeatable)."
    ),
]
ApprovalOpt = Annotated[
    Approval | None, typer.Option("--approval", help="required: each lease waits for an operator.")
]

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` or combinations such as ``1h30m``."""
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    elif value and _DURATION.sub("", value) == "":
        seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(value))
    else:
        raise CliError(f"--ttl takes a duration such as 90s, 15m, 2h or 7d, got {text!r}")
    if seconds < 1:
        raise CliError("--ttl must be at least one second")
    return timedelta(seconds=seconds)


def rfc3339(moment: datetime) -> str:
    """UTC, whole seconds, ``Z``: what the API's time fields take."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def constraints(cli: CliState, given: dict[str, Any], ttl: str | None) -> dict[str, Any]:
    """The request body fields for the options that were given (and only those)."""
    body = {name: value for name, value in given.items() if value is not None and value != []}
    if ttl is not None:
        if "expires_at" in body:
            raise CliError("give --expires-at or --ttl, not both")
        body["expires_at"] = rfc3339(cli.wiring.now() + parse_duration(ttl))
    if "keys" in body:
        check_key_names(body["keys"])
    for name in ("actions", "scopes"):
        if name in body:
            body[name] = [str(item) for item in dict.fromkeys(body[name])]
    if "approval" in body:
        body["approval"] = str(body["approval"])
    if "methods" in body:
        body["methods"] = [method.upper() for method in body["methods"]]
    return body


def describe(view: dict[str, Any]) -> None:
    """A grant's fields, one per line."""
    agent = f"{view.get('agent') or '-'} ({view.get('agent_id')})"
    limit = f"{view['rate_limit']} / min" if view.get("rate_limit") else "-"
    print_fields(
        [
            ("id", str(view.get("id"))),
            ("agent", agent),
            ("set", str(view.get("secret_set"))),
            ("keys", joined(view.get("keys"), empty="all")),
            ("actions", joined(view.get("actions"))),
            ("scopes", joined(view.get("scopes"))),
            ("approval", str(view.get("approval") or "none")),
            ("not before", when(view.get("not_before"))),
            ("expires", when(view.get("expires_at"))),
            ("max lease ttl", f"{view.get('max_lease_ttl')} s"),
            ("max lease uses", str(view.get("max_lease_uses") or "-")),
            ("rate limit", limit),
            ("uses", f"{view.get('uses', 0)} of {view.get('max_uses') or 'unlimited'}"),
            ("methods", joined(view.get("methods"), empty="any")),
            ("paths", joined(view.get("paths"), empty="any")),
            ("created", f"{when(view.get('created_at'))} by {view.get('created_by') or '-'}"),
            ("updated", when(view.get("updated_at"))),
            ("revoked", when(view.get("revoked_at"))),
        ]
    )
