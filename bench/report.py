"""The benchmark's report: the summary table, per-round details and machine facts.

Used by ``proxy.py``; every number comes from the load generator's results (``load.py``)
and from ``/proc``. Medians are taken across rounds; see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

TARGETS = ("direct", "bare", "keyfob")
BATCH = 100  # leases per batch mint (``proxy.BATCH``)


# -- summary -----------------------------------------------------------------------------


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Row:
    metric: str
    direct: float | None
    bare: float | None
    keyfob: float | None
    ratio: float | None
    target: str
    met: bool | None
    unit: str = "ms"


def summarise(rounds: list[dict[str, Any]], ramp: dict[str, Any], rss: dict[str, Any]) -> list[Row]:
    def each(kind: str, name: str, pick: Callable[[dict[str, Any]], float | None]) -> list[Any]:
        return [pick(r[kind][name]) for r in rounds]

    def over(kind: str, pick: Callable[[dict[str, Any]], float | None]) -> dict[str, Any]:
        return {n: med(each(kind, n, pick)) for n in TARGETS}

    def added(kind: str, pick: Callable[[dict[str, Any]], float | None]) -> dict[str, Any]:
        """Per round, the target's value minus direct's; then the median across rounds."""
        out: dict[str, Any] = {"direct": None}
        for n in ("bare", "keyfob"):
            diffs = [
                (a - b) if a is not None and b is not None else None
                for a, b in zip(each(kind, n, pick), each(kind, "direct", pick), strict=True)
            ]
            out[n] = med(diffs)
        return out

    def p(q: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda r: r["latency_ms"][q]

    def fb(q: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda r: r["first_byte_ms"][q]

    rows: list[Row] = []

    def add(metric: str, v: dict[str, Any], target: str = "", met: bool | None = None, unit="ms"):
        rows.append(
            Row(
                metric,
                v.get("direct"),
                v.get("bare"),
                v.get("keyfob"),
                ratio(v.get("keyfob"), v.get("bare")),
                target,
                met,
                unit,
            )
        )

    lat50 = over("latency_1", p("p50"))
    r = ratio(lat50["keyfob"], lat50["bare"])
    add("latency p50, 1 client", lat50, "≤ 1.2 x bare", r is not None and r <= 1.2)
    add("latency p99, 1 client", over("latency_1", p("p99")))
    add("added latency p50 vs direct, 1 client", added("latency_1", p("p50")))
    add("added latency p99 vs direct, 1 client", added("latency_1", p("p99")))
    rps = over("rps_32", lambda r: r["rps"])
    r = ratio(rps["keyfob"], rps["bare"])
    add("requests/s, 32 clients", rps, "≥ 0.85 x bare", r is not None and r >= 0.85, "req/s")
    add("latency p50, 32 clients", over("rps_32", p("p50")))
    cpu = "server_cpu_ms_per_request"
    add("server CPU per request, 1 client", over("latency_1", lambda r: r.get(cpu)))
    add("server CPU per request, 32 clients", over("rps_32", lambda r: r.get(cpu)))
    share = over("rps_32", lambda r: r.get("server_cpu_share"))
    add("server CPU busy, 32 clients", share, unit="cores")
    errors = over("rps_32", lambda r: r["error_rate"] * 100)
    add("errors, 32 clients", errors, "< 0.1 %", errors["keyfob"] < 0.1, "%")
    add("SSE first byte p50, 1 stream", over("sse_1", fb("p50")))
    sse1 = added("sse_1", fb("p50"))
    add("SSE first byte added vs direct, 1 stream", sse1, "≤ 1 ms", _le(sse1["keyfob"], 1.0))
    add("SSE first byte p50, 32 streams", over("sse_32", fb("p50")))
    sse32 = added("sse_32", fb("p50"))
    add("SSE first byte added vs direct, 32 streams", sse32, "≤ 5 ms", _le(sse32["keyfob"], 5.0))
    held = {n: max_without_stalls(ramp[n]) for n in TARGETS}
    add("SSE streams without stalls", held, "≥ 1,024", _ge(held["keyfob"], 1024), "streams")

    inv = [r["invalid_1"] for r in rounds]
    inv_rps = med([x["rps"] for x in inv])
    inv50 = med([x["latency_ms"]["p50"] for x in inv])
    inv99 = med([x["latency_ms"]["p99"] for x in inv])
    add("invalid lease (401) requests/s, 1 client", {"keyfob": inv_rps}, unit="req/s")
    valid = lat50["keyfob"]
    add("invalid lease p50, 1 client", {"keyfob": inv50}, "< valid p50", _lt(inv50, valid))
    add("invalid lease p99, 1 client", {"keyfob": inv99}, "≤ 1 ms", _le(inv99, 1.0))
    add("invalid lease server CPU per request", {"keyfob": med([x.get(cpu) for x in inv])})
    mints = {c: med([r[f"mint_{c}"]["rps"] for r in rounds]) for c in (1, 8)}
    best = max((v for v in mints.values() if v is not None), default=None)
    add("lease mints/s, 1 client", {"keyfob": mints[1]}, unit="req/s")
    add(
        "lease mints/s, 8 clients",
        {"keyfob": mints[8]},
        "≥ 2,000/s (best)",
        _ge(best, 2000),
        "req/s",
    )
    mint50 = med([r["mint_1"]["latency_ms"]["p50"] for r in rounds])
    add("lease mint p50, 1 client", {"keyfob": mint50})
    add(
        "lease mint server CPU per request, 8 clients",
        {"keyfob": med([r["mint_8"].get(cpu) for r in rounds])},
    )
    add(
        "lease mint server CPU busy, 8 clients",
        {"keyfob": med([r["mint_8"].get("server_cpu_share") for r in rounds])},
        unit="cores",
    )
    batches = [r["mint_batch_8"] for r in rounds if "mint_batch_8" in r]
    leases = med([b["rps"] * BATCH for b in batches])
    add(
        f"batch mint leases/s (count={BATCH}), 8 clients",
        {"keyfob": leases},
        "≥ 20,000/s",
        _ge(leases, 20_000),
        "leases/s",
    )
    add(
        "batch mint server CPU per lease, 8 clients",
        {"keyfob": med([_per_lease(b.get(cpu)) for b in batches])},
    )
    fresh = med([r["mint_call_32"]["rps"] for r in rounds if "mint_call_32" in r])
    r = ratio(fresh, rps["bare"])
    add(
        "fresh single-use lease per request (mint + call), 32 clients",
        {"bare": rps["bare"], "keyfob": fresh},
        "≥ 0.45 x bare",
        None if r is None else r >= 0.45,
        "req/s",
    )
    pooled = med([r["pool_call_32"]["rps"] for r in rounds if "pool_call_32" in r])
    r = ratio(pooled, rps["bare"])
    add(
        "fresh single-use lease per request, SDK pool (mint 20 at a time), 32 clients",
        {"bare": rps["bare"], "keyfob": pooled},
        "≥ 0.45 x bare",
        None if r is None else r >= 0.45,
        "req/s",
    )
    # CPU per request against bare's at 32 clients: the ratio a loaded machine keeps.
    bare_cpu = med([r["rps_32"]["bare"].get(cpu) for r in rounds])
    pair_cpu = med([r["mint_call_32"].get(cpu) for r in rounds if "mint_call_32" in r])
    add(
        "mint + call server CPU per pair, 32 clients",
        {"bare": bare_cpu, "keyfob": pair_cpu},
    )
    pool_cpu = med([r["pool_call_32"].get(cpu) for r in rounds if "pool_call_32" in r])
    add(
        "SDK pool server CPU per call, 32 clients",
        {"bare": bare_cpu, "keyfob": pool_cpu},
    )
    idle = rss["after_setup"]
    add("RSS idle after set-up", idle, "≤ 80 MB", _le(idle["keyfob"], 80), "MB")
    at256 = {n: ramp[n].get("256", {}).get("rss_mb_max") for n in ("bare", "keyfob")}
    add("RSS holding 256 SSE streams", at256, "≤ 200 MB", _le(at256["keyfob"], 200), "MB")
    add("RSS idle after the runs", rss["after_runs"], unit="MB")
    add("RSS peak (VmHWM)", rss["peak"], unit="MB")
    return rows


def _per_lease(per_request: float | None) -> float | None:
    return per_request / BATCH if per_request is not None else None


def _le(a: float | None, b: float) -> bool | None:
    return None if a is None else a <= b


def _lt(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a < b


def _ge(a: float | None, b: float) -> bool | None:
    return None if a is None else a >= b


def max_without_stalls(levels: dict[str, Any]) -> int:
    """The highest level that, with every level below it, had no stalled stream."""
    best = 0
    for level in sorted(levels, key=int):
        if levels[level]["stalls"]:
            break
        best = int(level)
    return best


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("req/s", "streams", "leases/s"):
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:.1f}"
    if unit == "cores":
        return f"{value:.2f}"
    if unit == "%":
        return f"{value:.3f}"
    return f"{value:.3f}"


def table(rows: list[Row], markdown: bool = False) -> str:
    head = ["metric", "unit", "direct", "bare", "keyfob", "keyfob/bare", "target", "met"]
    body = [
        [
            r.metric,
            r.unit,
            fmt(r.direct, r.unit),
            fmt(r.bare, r.unit),
            fmt(r.keyfob, r.unit),
            "—" if r.ratio is None else f"{r.ratio:.2f}",
            r.target or "—",
            {True: "yes", False: "NO", None: "—"}[r.met] if r.target else "",
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    numeric = {2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def details(rounds: list[dict[str, Any]], ramp: dict[str, Any]) -> str:
    """Per-round numbers (to judge the noise) and the stream ramp, level by level."""
    out = ["per round (direct / bare / keyfob):"]
    for i, r in enumerate(rounds, 1):
        lat = " / ".join(f"{r['latency_1'][n]['latency_ms']['p50']:.3f}" for n in TARGETS)
        rps = " / ".join(f"{r['rps_32'][n]['rps']:,.0f}" for n in TARGETS)
        errs = " / ".join(str(r["rps_32"][n]["errors"]) for n in TARGETS)
        inv = r["invalid_1"]
        out.append(
            f"  round {i}: p50@1 {lat} ms; req/s@32 {rps}; errors@32 {errs}; "
            f"invalid p50/p99 {inv['latency_ms']['p50']:.3f}/{inv['latency_ms']['p99']:.3f} ms; "
            f"mints/s {r['mint_1']['rps']:,.0f} (1) {r['mint_8']['rps']:,.0f} (8)"
        )
    out.append("SSE streams (events every 100 ms; stalled / first byte p50, p99 / max gap / RSS):")
    for name in TARGETS:
        for level, res in ramp[name].items():
            fb = res["first_byte_ms"]
            rss = res.get("rss_mb_max")
            kinds = f" {res['stall_kinds']}" if res["stall_kinds"] else ""
            out.append(
                f"  {name:6} {int(level):4} streams: {res['stalls']} stalled{kinds}; "
                f"first byte {_ms(fb['p50'])}, {_ms(fb['p99'])} ms; "
                f"max gap {res['max_gap_ms']:.0f} ms; "
                f"events {res['events_received']}/{res['events_expected']}"
                + (f"; RSS {rss:.1f} MB" if rss is not None else "")
            )
    return "\n".join(out)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def errors_seen(rounds: list[dict[str, Any]]) -> list[str]:
    """Every run that had an error, named, with its kinds (any error is worth reading)."""
    seen = []
    for i, r in enumerate(rounds, 1):
        for kind, res in r.items():
            for name, one in res.items() if "mode" not in res else [("keyfob", res)]:
                if one.get("errors") or one.get("stalls"):
                    kinds = one.get("error_kinds") or one.get("stall_kinds")
                    seen.append(f"round {i} {kind} {name}: {kinds}")
    return seen


# -- machine -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("keyfob", "uvicorn", "aiohttp", "httptools", "uvloop", "fastapi"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "missing"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": versions,
        "loadavg_start": os.getloadavg(),
    }


def print_machine(facts: dict[str, Any]) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    load = " ".join(f"{x:.2f}" for x in facts["loadavg_start"])
    print(
        f"machine: {facts['cpu']}, {facts['cores']} cores ({facts['usable_cores']} usable), "
        f"Linux {facts['kernel']}"
    )
    print(f"python {facts['python']}, SQLite {facts['sqlite']}; {versions}")
    print(f"load average at start: {load}")
