"""Grant constraints, defined once.

Every edge derives from ``CONSTRAINTS``: the vault validates by ``kind`` and bounds, the
API builds its request schema from it, the CLI its options and the dashboard its form
fields; a contract test checks that the docs name every constraint. Adding a constraint
is one entry here, its storage column, and (for a new ``kind``) one validator per edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["keys", "subset", "methods", "moment", "count", "choice", "patterns", "budgets"]

# The order a person reads them in (the dashboard shows them so).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_MAX_LEASE_TTL = 900
MAX_LEASE_TTL = 86_400
# Counts are stored in 32-bit columns on PostgreSQL; this ceiling keeps well inside them.
MAX_COUNT = 10_000_000
MAX_PATTERNS = 64
# Budgets: what is counted, over which window; a grant or lease holds at most MAX_BUDGETS.
BUDGET_UNITS = ("usd", "tokens", "requests", "bytes")
BUDGET_WINDOWS = ("day", "month", "total")
MAX_BUDGETS = 12
MAX_BUDGET_USD = 1_000_000
MAX_BUDGET_COUNT = 10**15


@dataclass(frozen=True)
class Constraint:
    """One grant constraint: its API name, value kind, bounds and how each edge shows it."""

    name: str
    kind: Kind
    label: str
    help: str
    flag: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    warning: str | None = None
    # None means "no limit" (or "every key"); such constraints can be cleared.
    nullable: bool = True

    @property
    def is_list(self) -> bool:
        return self.kind in ("keys", "subset", "methods", "patterns", "budgets")

    @property
    def clear_name(self) -> str:
        """The name ``grant update --clear`` takes."""
        return self.name.replace("_", "-")


CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint(
        "keys",
        "keys",
        "Key allowlist",
        "Which of the set's keys the agent may use. Default: every key of the set, "
        "including keys added later.",
        "--key",
        metavar="NAME",
    ),
    Constraint(
        "actions",
        "subset",
        "Actions",
        "What the agent may do with the set: proxy (keyfob injects the secret; the agent "
        "never sees it) and/or export. Default: proxy only.",
        "--action",
        choices=("proxy", "export"),
        warning="export hands the agent the plaintext secret values. Once exported they are "
        "out of keyfob's control: grant it only deliberately.",
        default=("proxy",),
        nullable=False,
    ),
    Constraint(
        "not_before",
        "moment",
        "Not before (UTC)",
        "The grant cannot be used before this time (RFC 3339; no offset means UTC). "
        "Default: usable at once.",
        "--not-before",
        metavar="TIME",
    ),
    Constraint(
        "expires_at",
        "moment",
        "Expires at (UTC)",
        "The grant stops working at this time, which must be in the future (RFC 3339; no "
        "offset means UTC). Default: never.",
        "--expires-at",
        metavar="TIME",
    ),
    Constraint(
        "scopes",
        "subset",
        "Lease scopes",
        "Lease scopes the agent may mint: request (single use) and/or workflow (usable many "
        "times until it expires). Default: request only.",
        "--scope",
        choices=("request", "workflow"),
        default=("request",),
        nullable=False,
    ),
    Constraint(
        "max_lease_ttl",
        "count",
        "Max lease TTL (seconds)",
        f"No lease on this grant lives longer than this many seconds. Default "
        f"{DEFAULT_MAX_LEASE_TTL} (15 minutes); at most {MAX_LEASE_TTL}.",
        "--max-lease-ttl",
        metavar="SECONDS",
        default=DEFAULT_MAX_LEASE_TTL,
        minimum=1,
        maximum=MAX_LEASE_TTL,
        nullable=False,
    ),
    Constraint(
        "max_lease_uses",
        "count",
        "Max uses per lease",
        "Ceiling on how many times one workflow lease may be used. Default: no ceiling "
        "beyond the lease's own.",
        "--max-lease-uses",
        metavar="N",
        minimum=1,
        maximum=MAX_COUNT,
    ),
    Constraint(
        "rate_limit",
        "count",
        "Rate limit (uses per minute)",
        "Uses per minute across all the grant's leases. Default: no rate limit.",
        "--rate-limit",
        metavar="N",
        minimum=1,
        maximum=MAX_COUNT,
    ),
    Constraint(
        "max_uses",
        "count",
        "Max uses in all",
        "Uses over the grant's whole life, after which it stops working. Default: unlimited.",
        "--max-uses",
        metavar="N",
        minimum=1,
        maximum=MAX_COUNT,
    ),
    Constraint(
        "methods",
        "methods",
        "HTTP methods",
        "HTTP methods allowed for proxied requests. Default: any method.",
        "--method",
        metavar="M",
        choices=METHODS,
    ),
    Constraint(
        "paths",
        "patterns",
        "Paths",
        f"Up to {MAX_PATTERNS} path patterns allowed for proxied requests: * matches within "
        "one segment, ** any depth. Default: any path.",
        "--path",
        metavar="PATTERN",
        maximum=MAX_PATTERNS,
    ),
    Constraint(
        "approval",
        "choice",
        "Approval",
        "required: every lease request waits until an operator approves it. Default: none.",
        "--approval",
        choices=("none", "required"),
        default="none",
        nullable=False,
    ),
    Constraint(
        "budgets",
        "budgets",
        "Budgets",
        "Spend limits, each {unit, limit, window}: unit usd, tokens, requests or bytes; "
        "window day, month (UTC) or total. A request whose worst case does not fit is "
        "refused (budget-exceeded); a stream is cut at the budget. Default: none.",
        "--budget",
        metavar="UNIT:LIMIT:WINDOW",
        maximum=MAX_BUDGETS,
    ),
)

BY_NAME: dict[str, Constraint] = {c.name: c for c in CONSTRAINTS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def defaults() -> dict[str, Any]:
    """The value of every constraint on a grant that names none (least privilege)."""
    return {c.name: list(c.default) if c.is_list and c.default else c.default for c in CONSTRAINTS}
