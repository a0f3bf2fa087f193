"""Server CPU per request: the number that stays readable on a loaded machine.

``.venv/bin/python bench/cpu.py [--rounds N] [--duration S] [--json PATH]`` starts the same
processes as ``proxy.py`` (fake upstream, bare pass-through, keyfob on SQLite) and, for
each row, runs the load generator and reads the server process's user + system CPU time
from ``/proc/<pid>/stat`` before and after: CPU milliseconds per answered request. Wall
time, requests/s and latency are not reported: on a machine shared with other jobs they
measure the other jobs. Medians over ``--rounds``; the ratio column is keyfob over bare's
CPU per request at the same concurrency (for mint + call: per pair, over one bare request).
See docs/benchmarks.md ("CPU per request").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Siblings: run as a script, bench/ is first on sys.path.
from proxy import (
    BATCH,
    SDK_BATCH,
    Config,
    Processes,
    _keyfob_env_cleared,
    fake_lease,
    http_spec,
    mint_request,
    raise_fd_limit,
    rss_mb,
    start_stack,
)

CPU = "server_cpu_ms_per_request"


def rows(stack: Any, cfg: Config) -> list[tuple[str, str, dict[str, Any], int]]:
    """(row, target, load spec, requests per answer) for one round."""
    kf, bare = stack.targets["keyfob"], stack.targets["bare"]
    mint = mint_request(kf.port, stack.agent_token)
    batch = mint_request(kf.port, stack.agent_token, BATCH)
    pair = {**http_spec(kf, mint, 32, cfg), "mode": "mint_call", "call": kf.json_request("{lease}")}
    pool_mint = mint_request(kf.port, stack.agent_token, SDK_BATCH)
    pooled = {**http_spec(kf, pool_mint, 32, cfg), "mode": "pool_call", "call": pair["call"]}
    proxied = "proxied, workflow lease"
    invalid = kf.json_request(fake_lease())
    return [
        (f"{proxied}, 1 client", "bare", http_spec(bare, bare.json_request(), 1, cfg), 1),
        (f"{proxied}, 1 client", "keyfob", http_spec(kf, kf.json_request(), 1, cfg), 1),
        (f"{proxied}, 32 clients", "bare", http_spec(bare, bare.json_request(), 32, cfg), 1),
        (f"{proxied}, 32 clients", "keyfob", http_spec(kf, kf.json_request(), 32, cfg), 1),
        ("invalid lease (401), 1 client", "keyfob", http_spec(kf, invalid, 1, cfg, 401), 1),
        ("lease mint, 8 clients", "keyfob", http_spec(kf, mint, 8, cfg, 201), 1),
        (
            "batch mint (count=100), per lease, 8 clients",
            "keyfob",
            http_spec(kf, batch, 8, cfg, 201),
            BATCH,
        ),
        ("mint + call, per pair, 32 clients", "keyfob", pair, 1),
        ("SDK pool (mint 20 at a time), per call, 32 clients", "keyfob", pooled, 1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", help="run only the rows whose name contains this text")
    args = parser.parse_args(argv)
    cfg = Config(rounds=args.rounds, duration=args.duration, warmup=0.3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-cpu-"))
    procs = Processes(workdir)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at start: {load}", flush=True)
    try:
        with _keyfob_env_cleared():
            stack = start_stack(procs, workdir)
        time.sleep(1.0)
        idle = {"bare": rss_mb(stack.bare_pid), "keyfob": rss_mb(stack.keyfob_pid)}
        for target in stack.targets.values():
            spec = http_spec(target, target.json_request(), 8, cfg)
            procs.load({**spec, "duration": 1.0, "warmup": 0.1})
        seen: dict[tuple[str, str], list[float]] = {}
        for n in range(cfg.rounds):
            for row, name, spec, per in rows(stack, cfg):
                if args.only and args.only not in row:
                    continue
                print(f"  round {n + 1}: {row} ({name})", file=sys.stderr, flush=True)
                result = procs.load(spec, server=stack.targets[name].pid)
                if result.get("errors"):
                    print(f"    errors: {result.get('error_kinds')}", file=sys.stderr)
                if result.get(CPU) is not None:
                    seen.setdefault((row, name), []).append(result[CPU] / per)
        for name in ("upstream", "bare", "keyfob"):
            procs.check(name)
        table: list[dict[str, Any]] = []
        names = list(dict.fromkeys(r for r, _ in seen))
        for row in names:
            kf = seen.get((row, "keyfob"))
            bare_row = row if (row, "bare") in seen else "proxied, workflow lease, 32 clients"
            if "1 client" in row and (row, "bare") not in seen:
                bare_row = "proxied, workflow lease, 1 client"
            b = seen.get((bare_row, "bare"))
            k_med = statistics.median(kf) if kf else None
            b_med = statistics.median(b) if b else None
            table.append(
                {
                    "row": row,
                    "bare_ms": b_med,
                    "keyfob_ms": k_med,
                    "ratio": k_med / b_med if k_med and b_med else None,
                    "keyfob_rounds": kf,
                }
            )
        print()
        print(f"{'server CPU per request':50}  {'bare ms':>8}  {'keyfob ms':>9}  {'kf/bare':>7}")
        for t in table:
            b = f"{t['bare_ms']:.3f}" if t["bare_ms"] is not None else "—"
            k = f"{t['keyfob_ms']:.3f}" if t["keyfob_ms"] is not None else "—"
            r = f"{t['ratio']:.2f}" if t["ratio"] is not None else "—"
            print(f"{t['row']:50}  {b:>8}  {k:>9}  {r:>7}")
        print(f"{'RSS idle after set-up (MB)':50}  {idle['bare']:8.1f}  {idle['keyfob']:9.1f}")
        print("per round (keyfob, ms): ")
        for t in table:
            print(f"  {t['row']}: " + ", ".join(f"{v:.3f}" for v in t["keyfob_rounds"] or []))
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average at end: {load}")
        if args.json:
            args.json.write_text(json.dumps({"rows": table, "rss_idle": idle}, indent=2))
        return 0
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
