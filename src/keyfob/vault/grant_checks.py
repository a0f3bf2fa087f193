"""Validation of grant constraints, one checker per kind of ``keyfob.constraints``.

Bounds and choices come from the spec, so every edge refuses the same values with the
same message (naming the field, never echoing the value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from keyfob.clock import FORMAT_HINT, BadTime, in_range, isoformat, parse_iso
from keyfob.constraints import (
    BUDGET_UNITS,
    BUDGET_WINDOWS,
    BY_NAME,
    MAX_BUDGET_COUNT,
    MAX_BUDGET_USD,
    Constraint,
)
from keyfob.vault import rules
from keyfob.vault.validation import field_error as fail


def _keys(c: Constraint, value: Any, set_keys: set[str]) -> list[str]:
    if not isinstance(value, list) or not value:
        raise fail(c.name, "a non-empty list of key names, or null for all keys")
    missing = [k for k in value if k not in set_keys]
    if missing:
        raise fail(c.name, f"the set has no key {', '.join(map(str, missing))}")
    return sorted(set(value))


def _subset(c: Constraint, value: Any, _: set[str]) -> list[str]:
    allowed = c.choices
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise fail(c.name, f"a non-empty list drawn from {', '.join(allowed)}")
    bad = [v for v in value if v not in allowed]
    if bad:
        raise fail(c.name, f"unknown: {', '.join(bad)}; allowed: {', '.join(allowed)}")
    return sorted(set(value), key=allowed.index)


def _methods(c: Constraint, value: Any, _: set[str]) -> list[str]:
    if not isinstance(value, list) or not value:
        raise fail(c.name, "a non-empty list of HTTP methods, or null for any")
    upper = sorted({str(m).upper() for m in value})
    bad = [m for m in upper if m not in c.choices]
    if bad:
        raise fail(c.name, f"unknown method {', '.join(bad)}")
    return upper


def _patterns(c: Constraint, value: Any, _: set[str]) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > (c.maximum or len(value)):
        raise fail(c.name, f"a list of 1-{c.maximum} path patterns, or null for any path")
    try:
        return [rules.check_pattern(str(p)) for p in value]
    except ValueError as exc:
        raise fail(c.name, str(exc)) from None


def _count(c: Constraint, value: Any, _: set[str]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (c.minimum or 0):
        raise fail(c.name, f"a whole number of at least {c.minimum}")
    if c.maximum is not None and value > c.maximum:
        raise fail(c.name, f"at most {c.maximum}")
    return value


def _moment(c: Constraint, value: Any, _: set[str]) -> str:
    try:
        if isinstance(value, datetime):
            return isoformat(in_range(value))
        if isinstance(value, str):
            return isoformat(parse_iso(value))
    except BadTime as exc:
        raise fail(c.name, str(exc)) from None
    raise fail(c.name, f"must be {FORMAT_HINT}")


def _choice(c: Constraint, value: Any, _: set[str]) -> str:
    if value not in c.choices:
        raise fail(c.name, " or ".join(c.choices))
    return str(value)


def _budgets(c: Constraint, value: Any, _: set[str]) -> list[dict[str, Any]]:
    return clean_budgets(value, c.name, c.maximum or 0)


def clean_budgets(value: Any, name: str = "budgets", most: int = 12) -> list[dict[str, Any]]:
    """Budgets as ``[{unit, limit, window}]``, one per unit and window."""
    shape = "a list of {unit, limit, window}, or null for none"
    if not isinstance(value, list) or not value or len(value) > most:
        raise fail(name, f"{shape} (at most {most})")
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for item in value:
        if not isinstance(item, dict) or set(item) - {"unit", "limit", "window"}:
            raise fail(name, shape)
        unit, limit, window = item.get("unit"), item.get("limit"), item.get("window", "total")
        if unit not in BUDGET_UNITS:
            raise fail(name, f"unit must be one of {', '.join(BUDGET_UNITS)}")
        if window not in BUDGET_WINDOWS:
            raise fail(name, f"window must be one of {', '.join(BUDGET_WINDOWS)}")
        if (unit, window) in seen:
            raise fail(name, f"one {unit} budget per window ({window} appears twice)")
        seen.add((unit, window))
        if unit == "usd":
            if (
                not isinstance(limit, int | float)
                or isinstance(limit, bool)
                or not 0 < limit <= MAX_BUDGET_USD
            ):
                raise fail(name, f"a usd limit is a number above 0 and at most {MAX_BUDGET_USD}")
            limit = float(limit)
        elif (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 0 < limit <= (MAX_BUDGET_COUNT)
        ):
            raise fail(name, f"a {unit} limit is a whole number of at least 1")
        out.append({"unit": unit, "limit": limit, "window": window})
    return out


_CHECKS: dict[str, Callable[[Constraint, Any, set[str]], Any]] = {
    "keys": _keys,
    "subset": _subset,
    "methods": _methods,
    "patterns": _patterns,
    "count": _count,
    "moment": _moment,
    "choice": _choice,
    "budgets": _budgets,
}


def clean_constraints(spec: Mapping[str, Any], set_keys: set[str]) -> dict[str, Any]:
    """Validate the constraints named in ``spec`` (others are not returned).

    null means "no limit" for a nullable constraint and "the default" for the others.
    """
    out: dict[str, Any] = {}
    for name, value in spec.items():
        c = BY_NAME.get(name)
        if c is None:
            continue
        if value is None and c.nullable:
            out[name] = None
        elif value is None and c.kind == "count":
            out[name] = c.default
        else:
            out[name] = _CHECKS[c.kind](c, value, set_keys)
    return out
