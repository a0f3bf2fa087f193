"""Budgets: what a request may spend, reserved before it goes upstream, settled after.

Pure rules, no I/O. ``lines`` names the counters a use touches (each budget of the grant
and of the lease, in its current period); ``need`` is a request's worst case (requested
``max_tokens`` capped by the meter's maximum, or its default; input tokens estimated from
the body size; times the model's price); ``judge`` (asked by ``decision.decide``) reserves
the worst case on every line or refuses, naming the budget and what remains. A stream may
start with less than its worst case: it reserves what remains and is cut there
(``allowance``). ``settle`` turns what the answer used into each line's correction.

Amounts are whole numbers in a unit's base: nano-dollars for usd, else tokens, requests
and bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keyfob.profiles.metering import Plan
from keyfob.profiles.prices import NANO_PER_USD, Price, PriceTable, cost_nano
from keyfob.profiles.taps import Allowance, Usage
from keyfob.store.records import GrantRow, LeaseRow

WARN_AT = 0.8  # a budget past 80% of its limit shows as a warning


@dataclass(frozen=True, slots=True)
class Line:
    """One budget's counter in its current period."""

    owner: str  # grant:<id> or lease:<id>
    unit: str
    window: str
    period: str
    limit: int  # in the unit's base

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.owner, self.unit, self.period)


def base(unit: str, amount: float) -> int:
    """An amount as the counters hold it (usd as nano-dollars)."""
    return round(amount * NANO_PER_USD) if unit == "usd" else int(amount)


def shown(unit: str, amount: int) -> float | int:
    """A counter's amount as people read it (usd as dollars)."""
    return amount / NANO_PER_USD if unit == "usd" else amount


def period(window: str, iso: str) -> str:
    """The period a window is in at ``iso`` (RFC 3339, UTC): ``total``, month or day."""
    if window == "day":
        return iso[:10]
    if window == "month":
        return iso[:7]
    return "total"


def lines(grant: GrantRow, lease: LeaseRow, iso: str) -> list[Line]:
    """The counters a use of ``lease`` touches now."""
    out = []
    owners = ((f"grant:{grant.id}", grant.budgets), (f"lease:{lease.id}", lease.budgets))
    for owner, held in owners:
        for b in held or ():
            unit, window = b["unit"], b["window"]
            out.append(Line(owner, unit, window, period(window, iso), base(unit, b["limit"])))
    return out


@dataclass(frozen=True, slots=True)
class Need:
    """What a request may spend per unit at worst, and at least (a stream may start with
    less than its worst case and is cut at what it reserved)."""

    worst: Mapping[str, int]
    least: Mapping[str, int]
    stretch: bool
    price: Price | None
    unpriced: bool  # a metered model with no price and no fallback


# The smallest request there is (the dry run's): one request, a byte, a token, a nano-dollar.
_ONE = {"requests": 1, "bytes": 1, "tokens": 1, "usd": 1}
SMALLEST = Need(_ONE, _ONE, False, None, False)


def need(plan: Plan | None, size: int, prices: PriceTable) -> Need:
    """The worst case of a request of ``size`` bytes with metering ``plan``."""
    worst = {"requests": 1, "bytes": size, "tokens": 0, "usd": 0}
    least = dict(worst)
    if plan is None:
        return Need(worst, least, False, None, False)
    inp, out = plan.input_estimate, plan.max_output
    worst["tokens"], least["tokens"] = inp + out, inp + min(out, 1)
    price = prices.lookup(plan.model)
    if price is not None:
        worst["usd"] = cost_nano(price, inp, out)
        least["usd"] = cost_nano(price, inp, min(out, 1))
    return Need(worst, least, plan.stream, price, price is None)


@dataclass(frozen=True, slots=True)
class Refused:
    """The budget that does not fit, and what it has left."""

    line: Line
    remaining: int
    why: str = "exceeded"  # or "unpriced"

    def details(self) -> dict[str, Any]:
        scope, _, owner_id = self.line.owner.partition(":")
        return {
            "budget": {
                "scope": scope,
                "id": owner_id,
                "unit": self.line.unit,
                "window": self.line.window,
                "period": self.line.period,
                "limit": shown(self.line.unit, self.line.limit),
            },
            "remaining": shown(self.line.unit, max(self.remaining, 0)),
        }


@dataclass(frozen=True, slots=True)
class Reserved:
    """What a use took on each line (and per unit, what its answer may spend)."""

    takes: tuple[tuple[tuple[str, str, str], int], ...]
    per_unit: Mapping[str, int] = field(default_factory=dict)
    price: Price | None = None


def judge(
    budget_lines: Sequence[Line], used: Mapping[tuple[str, str, str], int], want: Need
) -> Reserved | Refused:
    """Reserve ``want`` on every line, or refuse with the first budget it does not fit."""
    per_unit: dict[str, int] = {}
    for line in budget_lines:
        remaining = line.limit - used.get(line.key, 0)
        if line.unit == "usd" and want.unpriced:
            return Refused(line, remaining, "unpriced")
        take = per_unit.get(line.unit, want.worst[line.unit])
        if take > remaining:
            if not want.stretch or want.least[line.unit] > remaining:
                return Refused(line, remaining)
            take = remaining  # a stream: it starts and is cut at what remains
        per_unit[line.unit] = take
    # Every line of a unit takes the same amount: the least any of them allowed.
    takes = tuple((line.key, per_unit[line.unit]) for line in budget_lines)
    return Reserved(takes, per_unit, want.price)


def allowance(reserved: Reserved) -> Allowance | None:
    """What a streamed answer may spend before it is cut (None: no token or usd budget)."""
    tokens = reserved.per_unit.get("tokens")
    nano = reserved.per_unit.get("usd")
    price = reserved.price
    if tokens is None and (nano is None or price is None):
        return None

    def allow(input_tokens: int, output_tokens: int) -> bool:
        if tokens is not None and input_tokens + output_tokens > tokens:
            return False
        return not (
            nano is not None
            and price is not None
            and cost_nano(price, input_tokens, output_tokens) > nano
        )

    return allow


def spent(
    reserved: Reserved, usage: Usage | None, *, requests: int, size: int, cut: bool
) -> dict[str, int]:
    """What the use spent per unit: the metered usage, else (missing, flagged, or a stream
    cut at its reservation) what it reserved."""
    out = {"requests": requests, "bytes": size}
    for unit in ("tokens", "usd"):
        if unit not in reserved.per_unit:
            continue
        if usage is None or cut:
            out[unit] = reserved.per_unit[unit]
        elif unit == "tokens":
            out[unit] = usage.input_tokens + usage.output_tokens
        elif reserved.price is not None:
            out[unit] = cost_nano(
                reserved.price, usage.input_tokens, usage.output_tokens, usage.cached_tokens
            )
        else:
            out[unit] = reserved.per_unit[unit]
    return out


def corrections(
    reserved: Reserved, spend: Mapping[str, int]
) -> list[tuple[tuple[str, str, str], int]]:
    """Each line's change at settlement: what was spent less what was reserved."""
    units = {key[1] for key, _ in reserved.takes}
    return [
        (key, spend.get(key[1], take) - take)
        for key, take in reserved.takes
        if key[1] in units and spend.get(key[1], take) != take
    ]
