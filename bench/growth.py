"""Cost growth: proxy latency on an empty vault against one holding a lived-in amount of data.

``python bench/growth.py [--quick] [--rounds N] [--duration S] [--json PATH]`` starts the
fake upstream and two keyfob servers (SQLite, one worker each), set up alike through the
HTTP API (``vaults.py``). One is then stopped and seeded (``seed.py``: 10k sets, 100k
live leases, 1M audit records by default) and both are started again. In interleaved
rounds it measures the workflow-lease proxied request at 1 client (p50) and 32 clients
(p50 and requests/s) on each, and prints seeded/empty. Target: within 10 %.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import vaults
from report import machine, print_machine
from seed import seed

from proxy import Config, Processes, free_port, http_spec, progress, raise_fd_limit, wait_port

NAMES = ("empty", "seeded")
TARGET = 1.10


def measure(
    procs: Processes, stack: dict[str, vaults.Vault], cfg: Config, rounds: int
) -> list[Any]:
    out = []
    for n in range(rounds):
        order = NAMES if n % 2 == 0 else NAMES[::-1]
        result: dict[str, Any] = {}
        for kind, clients in (("latency_1", 1), ("rps_32", 32)):
            result[kind] = {}
            for name in order:
                target = stack[name].target()
                progress(f"round {n + 1}: {kind} {name}")
                spec = http_spec(target, target.json_request(), clients, cfg)
                result[kind][name] = procs.load(spec, server=target.pid)
        out.append(result)
    return out


def summary(rounds: list[Any]) -> list[tuple[str, str, float, float, float, str]]:
    def med(kind: str, name: str, pick: Any) -> float:
        return float(statistics.median(pick(r[kind][name]) for r in rounds))

    def p50(r: Any) -> float:
        return float(r["latency_ms"]["p50"])

    def cpu(r: Any) -> float:
        return float(r.get("server_cpu_ms_per_request") or 0.0)

    rows = []
    for label, kind, pick, unit, worse_is_higher in (
        ("latency p50, 1 client", "latency_1", p50, "ms", True),
        ("latency p50, 32 clients", "rps_32", p50, "ms", True),
        ("requests/s, 32 clients", "rps_32", lambda r: r["rps"], "req/s", False),
        ("server CPU per request, 32 clients", "rps_32", cpu, "ms", True),
    ):
        empty, seeded = med(kind, "empty", pick), med(kind, "seeded", pick)
        growth = seeded / empty if empty else float("nan")
        if label.startswith("server CPU"):
            met = ""
        elif worse_is_higher:
            met = "yes" if growth <= TARGET else "NO"
        else:
            met = "yes" if growth >= 1 / TARGET else "NO"
        rows.append((label, unit, empty, seeded, growth, met))
    return rows


def print_table(rows: list[Any], per_round: list[Any], markdown: bool) -> None:
    head = f"{'metric':36}  {'unit':5}  {'empty':>8}  {'seeded':>8}  {'seeded/empty':>12}  met"
    print(head)
    print("-" * len(head))
    for label, unit, empty, seeded, growth, met in rows:
        print(f"{label:36}  {unit:5}  {empty:8.3f}  {seeded:8.3f}  {growth:12.2f}  {met}")
    print("per round (empty / seeded): ")
    for i, r in enumerate(per_round, 1):
        l1 = [r["latency_1"][n]["latency_ms"]["p50"] for n in NAMES]
        l32 = [r["rps_32"][n]["latency_ms"]["p50"] for n in NAMES]
        rps = [r["rps_32"][n]["rps"] for n in NAMES]
        errs = [r["rps_32"][n]["error_rate"] for n in NAMES]
        print(
            f"  round {i}: p50@1 {l1[0]:.3f} / {l1[1]:.3f} ms; p50@32 {l32[0]:.3f} / "
            f"{l32[1]:.3f} ms; req/s@32 {rps[0]:,.0f} / {rps[1]:,.0f}; errors {errs[0]} / {errs[1]}"
        )
    if markdown:
        print()
        print("| metric | empty | seeded | seeded / empty | target ≤ 1.10x | ")
        print("| --- | --- | --- | --- | --- |")
        for label, unit, empty, seeded, growth, met in rows:
            print(
                f"| {label} ({unit}) | {empty:,.3f} | {seeded:,.3f} | {growth:.2f} | {met or '—'} |"
            )


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s runs, 10x less data")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--sets", type=int, default=10_000)
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--audit", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 2, 1.0
        args.sets, args.leases, args.audit = args.sets // 10, args.leases // 10, args.audit // 10
    return Config(rounds=args.rounds, duration=args.duration), args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    print_machine(machine())
    print(f"data: {args.sets:,} sets, {args.leases:,} leases, {args.audit:,} audit records")
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-growth-"))
    procs = Processes(workdir)
    started = time.monotonic()
    try:
        up_port = free_port()
        here = Path(__file__).resolve().parent
        procs.start("upstream", [sys.executable, str(here / "upstream.py"), str(up_port)])
        wait_port(procs, "upstream", up_port)
        stack = {n: vaults.create(procs, n, workdir / n) for n in NAMES}
        for vault in stack.values():
            vaults.start(procs, vault)
            vaults.configure(vault, f"http://127.0.0.1:{up_port}")
            vaults.stop(procs, vault)
        progress("seeding")
        took = seed(workdir / "seeded", sets=args.sets, leases=args.leases, audit=args.audit)
        sizes = {n: (workdir / n / "keyfob.db").stat().st_size / 2**20 for n in NAMES}
        print(f"seeded in {took:.1f} s; database files: empty {sizes['empty']:.1f} MB, "
              f"seeded {sizes['seeded']:.1f} MB", flush=True)  # fmt: skip
        for vault in stack.values():
            vaults.start(procs, vault)
            vaults.check(vault)
        progress("warm-up")
        for vault in stack.values():
            target = vault.target()
            spec = http_spec(target, target.json_request(), 8, cfg)
            procs.load({**spec, "duration": 1.0, "warmup": 0.1})
        rounds = measure(procs, stack, cfg, args.rounds)
        rows = summary(rounds)
        print()
        print_table(rows, rounds, args.markdown)
        print(f"took {time.monotonic() - started:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({"rounds": rounds, "summary": rows}, indent=2))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
