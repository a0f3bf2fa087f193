"""Grant constraints as options: shared by ``grant create`` and ``grant update``.

Each option maps to one field of the grant body; only options that were given are
sent, so ``update`` changes exactly what the user named. ``--ttl`` is client-side sugar
for ``expires_at`` (now + duration, UTC).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

from keyfob.cli.context import CliState
from keyfob.cli.entries import check_key_names
from keyfob.cli.errors import CliError
from keyfob.cli.output import joined, print_fields, when
from keyfob.clock import END
from keyfob.constraints import CONSTRAINTS, NAMES, Constraint
from keyfob.text import digits


class Action(StrEnum):
    """What an agent-side lease command is for (the grant's ``actions`` choices)."""

    PROXY = "proxy"
    EXPORT = "export"


class Scope(StrEnum):
    """A lease's scope (the grant's ``scopes`` choices)."""

    REQUEST = "request"
    WORKFLOW = "workflow"


def _choices(c: Constraint) -> type[StrEnum]:
    """An enum of the constraint's choices, so Typer lists and checks them."""
    members = {v.upper(): v for v in c.choices}
    return StrEnum(c.name.title().replace("_", ""), members)  # type: ignore[return-value]


# ``grant update --clear NAME``: the constraints that may be "no limit" (or "every key").
Clearable = StrEnum(  # type: ignore[misc]
    "Clearable", {c.name.upper(): c.clear_name for c in CONSTRAINTS if c.nullable}
)


def _option(c: Constraint) -> Any:
    """The Typer annotation of one constraint's option."""
    many = " (repeatable)" if c.is_list else ""
    help_text = c.help + many + (f" Warning: {c.warning}" if c.warning else "")
    # Counts carry their range, so Typer refuses an out-of-range number before sending.
    count = c.kind == "count"
    option = typer.Option(
        c.flag,
        metavar=c.metavar,
        min=c.minimum if count else None,
        max=c.maximum if count else None,
        help=help_text,
    )
    if c.kind in ("subset", "choice"):
        value: Any = _choices(c)
    else:
        value = int if c.kind == "count" else str
    return Annotated[(list[value] if c.is_list else value) | None, option]


Ttl = Annotated[
    str | None,
    typer.Option(
        "--ttl", metavar="DURATION", help="Valid for this long from now: 90s, 15m, 2h, 7d, 1h30m."
    ),
]


def _parameter(name: str, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def constraint_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` one option per grant constraint (and ``--ttl``), from the spec.

    The command takes ``given`` (constraint name to option value) and ``ttl`` in their place.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name not in ("given", "ttl")]
    at = next((i for i, p in enumerate(own) if p.name in ("clear", "json_out")), len(own))
    added = [_parameter(c.name, _option(c)) for c in CONSTRAINTS]
    after_window = NAMES.index("expires_at") + 1
    added.insert(after_window, _parameter("ttl", Ttl))
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    params = [*params[:at], *added, *params[at:]]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        given = {c.name: kwargs.pop(c.name) for c in CONSTRAINTS}
        command(given=given, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` or combinations such as ``1h30m``."""
    value = text.strip().lower()
    if digits(value, 64):  # too large for a time: said by the range check
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
        try:
            end: datetime | None = cli.wiring.now() + parse_duration(ttl)
        except OverflowError:  # past what a datetime can hold
            end = None
        if end is None or end >= END:
            raise CliError(f"--ttl would end the grant after the year {END.year - 1}")
        body["expires_at"] = rfc3339(end)
    if "keys" in body:
        check_key_names(body["keys"])
    for name in ("actions", "scopes"):
        if name in body:
            body[name] = [str(item) for item in dict.fromkeys(body[name])]
    if "approval" in body:
        body["approval"] = str(body["approval"])
    if "methods" in body:
        body["methods"] = [method.upper() for method in body["methods"]]
    if "budgets" in body:
        body["budgets"] = [parse_budget(text) for text in body["budgets"]]
    return body


def parse_budget(text: str) -> dict[str, Any]:
    """``UNIT:LIMIT[:WINDOW]`` (``usd:25:month``, ``tokens:100000:day``) as a budget."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise CliError(f"--budget takes UNIT:LIMIT[:WINDOW] such as usd:25:month, got {text!r}")
    unit, limit = parts[0].lower(), parts[1]
    try:
        number: float | int = float(limit) if unit == "usd" else int(limit)
    except ValueError:
        raise CliError(f"--budget {text!r}: the limit is not a number") from None
    window = parts[2].lower() if len(parts) > 2 else "total"
    return {"unit": unit, "limit": number, "window": window}


def budgets_text(budgets: list[dict[str, Any]] | None) -> str:
    """Budgets as ``usd 25/month, tokens 100000/day``."""
    if not budgets:
        return "-"
    return ", ".join(f"{b['unit']} {b['limit']}/{b['window']}" for b in budgets)


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
            ("budgets", budgets_text(view.get("budgets"))),
            ("created", f"{when(view.get('created_at'))} by {view.get('created_by') or '-'}"),
            ("updated", when(view.get("updated_at"))),
            ("revoked", when(view.get("revoked_at"))),
        ]
    )
