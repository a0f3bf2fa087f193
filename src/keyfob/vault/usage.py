"""Prices (the bundled table under the operator's overrides) and usage reports.

A usage report sums the metered ``proxy.request`` records of a period, grouped by grant,
agent, set, model or day, and shows every budget's standing in its current period, with
a warning past 80% of its limit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from keyfob.clock import BadTime, isoformat, parse_iso
from keyfob.profiles.prices import BadPrice, Price, PriceTable, check_model, parse_csv, parse_price
from keyfob.store import access as sql
from keyfob.store import usage as usage_sql
from keyfob.vault import budgets
from keyfob.vault.consume import Consumer
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.validation import field_error

log = logging.getLogger("keyfob.prices")

GROUPS = ("grant", "agent", "secret_set", "model", "day")
# Where there are no notices (SQLite), how often a process looks for price changes
# another process made (one one-row query).
RELOAD_SECONDS = 5.0
MAX_DAYS = 366


def fallback_price(text: str) -> Price | None:
    """The ``unknown_model_price`` setting: ``refuse`` or ``INPUT:OUTPUT[:CACHED]``."""
    if text.strip().lower() == "refuse":
        return None
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError("unknown_model_price is refuse or INPUT:OUTPUT[:CACHED] (USD per M)")
    inp, out = parse_price(parts[0], "input"), parse_price(parts[1], "output")
    cached = parse_price(parts[2], "cached") if len(parts) > 2 else inp
    return Price(inp, out, cached, "", "fallback")


class Pricing:
    """The price table every node meters with; operator changes are audited."""

    def __init__(self, core: Core, consumer: Consumer, fallback: Price | None) -> None:
        self._core = core
        self._consumer = consumer
        self._fallback = fallback
        consumer.prices = PriceTable(fallback=fallback)
        self._stamp: tuple[str | None, int] = (None, 0)

    @property
    def table(self) -> PriceTable:
        return self._consumer.prices

    async def reload_if_changed(self) -> None:
        """Read the table again if another process changed it (one one-row query): the
        price notice's stand-in where there are no notices (several processes on one
        SQLite file; ``Caches`` calls it every ``RELOAD_SECONDS``)."""
        try:
            async with self._core.db.read() as conn:
                stamp = await usage_sql.prices_stamp(conn)
            if stamp != self._stamp:
                await self.load()
        except Exception as exc:  # a missed check is retried at the next one
            log.warning("could not check the price table for changes: %s", type(exc).__name__)

    async def load(self) -> PriceTable:
        """Read the operator's prices (at start, after every change on this node, and when
        another node's change is noticed)."""
        async with self._core.db.read() as conn:
            rows = await usage_sql.list_prices(conn)
            self._stamp = await usage_sql.prices_stamp(conn)
        overrides = {
            r["model"]: Price(
                Decimal(r["input"]),
                Decimal(r["output"]),
                Decimal(r["cached"]),
                r["provider"],
                "operator",
            )
            for r in rows
        }
        stamp = max((r["updated_at"] for r in rows), default=None)
        self._consumer.prices = PriceTable(overrides, stamp, self._fallback)
        return self._consumer.prices

    def list(self) -> dict[str, Any]:
        table = self.table
        return {
            "version": table.version,
            "unknown_model": "refuse" if table.fallback is None else table.fallback.as_dict(),
            "prices": [{"model": m, **p.as_dict()} for m, p in table.rows()],
        }

    async def set(self, ctx: Context, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Set one model's price (USD per million tokens)."""
        try:
            model = check_model(str(spec.get("model") or ""))
            inp = parse_price(spec.get("input"), "input")
            out = parse_price(spec.get("output"), "output")
            cached = (
                parse_price(spec["cached"], "cached") if spec.get("cached") is not None else inp
            )
        except BadPrice as exc:
            raise field_error("price", str(exc)) from None
        provider = str(spec.get("provider") or "")[:32]
        await self._put(ctx, {model: Price(inp, out, cached, provider, "operator")}, "prices.set")
        return self.list()

    async def import_csv(self, ctx: Context, text: str) -> dict[str, Any]:
        """Import ``model,input,output[,cached[,provider]]`` rows; one bad row rejects all."""
        try:
            rows = parse_csv(text)
        except BadPrice as exc:
            error = field_error("csv", str(exc))
            error.extra["line"] = exc.line  # the import is rejected whole; this row is why
            raise error from None
        await self._put(ctx, rows, "prices.import")
        return self.list()

    async def _put(self, ctx: Context, rows: Mapping[str, Price], action: str) -> None:
        now = self._core.now()
        values = [
            {
                "model": model,
                "provider": p.provider,
                "input": str(p.input),
                "output": str(p.output),
                "cached": str(p.cached),
                "updated_at": now,
                "updated_by": ctx.actor,
            }
            for model, p in rows.items()
        ]
        async with self._core.write() as tx:
            await usage_sql.put_prices(tx.conn, values)
            await self._core.record(
                tx,
                ctx,
                action,
                "prices",
                details={"models": sorted(rows)[:100], "count": len(rows)},
            )
            tx.announce("prices")
        await self.load()


@dataclass(frozen=True, slots=True)
class Window:
    since: str
    until: str


class Usage:
    """Usage reports for ``GET /v1/usage``, ``keyfob usage`` and the dashboard."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def window(self, since: str | None, until: str | None, days: int | None) -> Window:
        now = self._core.clock.now()
        try:
            end = parse_iso(until) if until else now
            if since:
                start = parse_iso(since)
            else:
                span = days if days is not None else 30
                if not 1 <= span <= MAX_DAYS:
                    raise field_error("days", f"between 1 and {MAX_DAYS}")
                start = (end - timedelta(days=span - 1)).replace(
                    hour=0, minute=0, second=0, microsecond=0
                )
        except BadTime as exc:
            raise field_error("since", str(exc)) from None
        if start >= end:
            raise field_error("since", "must be before until")
        return Window(isoformat(start), isoformat(end + timedelta(microseconds=1)))

    async def report(
        self,
        group_by: str = "day",
        since: str | None = None,
        until: str | None = None,
        days: int | None = None,
    ) -> dict[str, Any]:
        """Requests, tokens, cost and bytes per group, and every budget's standing."""
        if group_by not in GROUPS:
            raise field_error("group_by", f"one of {', '.join(GROUPS)}")
        window = self.window(since, until, days)
        async with self._core.db.read() as conn:
            records = await usage_sql.proxy_records(conn, window.since, window.until)
            grants = await sql.list_grants(conn, include_revoked=True)
            agents = {a.id: a.name for a in await sql.list_agents(conn)}
            budgeted = [g for g in grants if g.budgets]
            counters = await usage_sql.budget_counters(conn, [f"grant:{g.id}" for g in budgeted])
        groups: dict[str, dict[str, Any]] = {}
        totals = _blank("total")
        for record in records:
            details = record["details"]
            key = _group_key(group_by, record, agents)
            row = groups.setdefault(key, _blank(key))
            for target in (row, totals):
                _add(target, details)
        for row in [*groups.values(), totals]:
            row["cost_usd"] = round(row["cost_usd"], 9)
        now = self._core.now()
        standing = []
        for g in budgeted:
            for b in g.budgets or ():
                line = budgets.Line(
                    f"grant:{g.id}",
                    b["unit"],
                    b["window"],
                    budgets.period(b["window"], now),
                    budgets.base(b["unit"], b["limit"]),
                )
                used = counters.get(line.key, 0)
                share = used / line.limit if line.limit else 1.0
                standing.append(
                    {
                        "grant_id": g.id,
                        "agent": agents.get(g.agent_id, g.agent_id),
                        "secret_set": g.set_path,
                        "unit": line.unit,
                        "window": line.window,
                        "period": line.period,
                        "limit": b["limit"],
                        "used": budgets.shown(line.unit, used),
                        "remaining": budgets.shown(line.unit, max(line.limit - used, 0)),
                        "percent": round(share * 100, 1),
                        "state": "exceeded"
                        if used >= line.limit
                        else "warning"
                        if share >= budgets.WARN_AT
                        else "ok",
                        "revoked": g.revoked_at is not None,
                    }
                )
        return {
            "group_by": group_by,
            "since": window.since,
            "until": window.until,
            "groups": sorted(groups.values(), key=lambda r: r["key"]),
            "total": totals,
            "budgets": standing,
        }


def _blank(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cost_usd": 0.0,
        "bytes": 0,
        "flagged": 0,
    }


def _group_key(group_by: str, record: dict[str, Any], agents: Mapping[str, str]) -> str:
    details = record["details"]
    if group_by == "day":
        return str(record["ts"])[:10]
    if group_by == "agent":
        agent_id = str(record["actor"]).removeprefix("agent:")
        return agents.get(agent_id, agent_id)
    if group_by == "secret_set":
        return str(record["target"]).removeprefix("secret_set:")
    if group_by == "grant":
        return str(details.get("grant_id") or "-")
    usage = details.get("usage") or {}
    return str(usage.get("model") or "-")


def _add(row: dict[str, Any], details: Mapping[str, Any]) -> None:
    row["requests"] += 1
    row["bytes"] += int(details.get("bytes_up") or 0) + int(details.get("bytes_down") or 0)
    usage = details.get("usage")
    if not isinstance(usage, dict):
        return
    for name in ("input_tokens", "output_tokens", "cached_tokens"):
        row[name] += int(usage.get(name) or 0)
    row["cost_usd"] += float(usage.get("cost_usd") or 0)
    if usage.get("flagged"):
        row["flagged"] += 1
