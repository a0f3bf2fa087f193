"""A/B of batch mint: two keyfob servers, the same load, measured in one run.

``.venv/bin/python bench/batch_ab.py --baseline SRC [--rounds N] [--duration S]`` starts
keyfob twice on SQLite: "base" imports keyfob from ``SRC`` (a ``src`` directory, e.g. of
``git archive main src``), "branch" from this checkout. Each is set up as ``make bench``
sets keyfob up (``proxy.set_up_keyfob``: set, agent, grant, one proxied check); then,
round after round with the order alternating, the load generator sends the ``make bench``
batch-mint row (``count=100``, 8 clients) to each (``--count 0``: the plain single-lease
mint instead). Printed per target: leases/s (median of rounds) and server CPU
milliseconds per lease (from ``/proc/<pid>/stat``, the number a loaded machine keeps),
with the load average.
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
from pathlib import Path
from typing import Any

# Siblings: run as a script, bench/ is first on sys.path.
from proxy import (
    BATCH,
    SET_PATH,
    Config,
    Processes,
    Target,
    _keyfob_env_cleared,
    http_spec,
    raw_request,
    set_up_keyfob,
    start_upstream,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="src dir of the A side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--count", type=int, default=BATCH, help="leases per call (0: no count)")
    args = parser.parse_args(argv)
    cfg = Config(duration=args.duration, warmup=0.5)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-ab-"))
    procs = Processes(workdir)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        targets: dict[str, Target] = {}
        requests: dict[str, str] = {}
        with _keyfob_env_cleared():
            upstream_url, _, _ = start_upstream(procs)
            for name, src in (("base", args.baseline.resolve()), ("branch", None)):
                env = {"PYTHONPATH": str(src)} if src is not None else None
                kf = set_up_keyfob(procs, workdir, upstream_url, name=name, env=env)
                targets[name] = Target(name, kf.port, "", kf.agent_token, kf.pid)
                asked: dict[str, Any] = {"secret_set": SET_PATH, "scope": "request"}
                if args.count:
                    asked["count"] = args.count
                body = json.dumps(asked).encode()
                requests[name] = raw_request("POST", "/v1/leases", kf.port, kf.agent_token, body)
        for name, target in targets.items():  # warm-up
            spec = http_spec(target, requests[name], args.clients, cfg, 201)
            procs.load({**spec, "duration": 1.0, "warmup": 0.1})
        seen: dict[str, dict[str, list[float]]] = {n: {"rate": [], "cpu": []} for n in targets}
        for n in range(args.rounds):
            order = list(targets) if n % 2 == 0 else list(reversed(targets))
            for name in order:
                target = targets[name]
                spec = http_spec(target, requests[name], args.clients, cfg, 201)
                result = procs.load(spec, server=target.pid)
                if result.get("errors"):
                    print(f"  {name}: errors {result.get('error_kinds')}", file=sys.stderr)
                per = max(1, args.count)
                rate = result["rps"] * per
                cpu = result["server_cpu_ms_per_request"] / per
                seen[name]["rate"].append(rate)
                seen[name]["cpu"].append(cpu)
                print(
                    f"  round {n + 1} {name:6}: {rate:9,.0f} leases/s  {cpu:.4f} ms CPU/lease",
                    file=sys.stderr,
                    flush=True,
                )
        for name in targets:
            procs.check(name)
        what = f"batch mint (count={args.count})" if args.count else "lease mint (no count)"
        print(f"{what}, {args.clients} clients, {args.rounds} rounds")
        print(f"{'':8}{'leases/s':>12}{'CPU ms/lease':>14}")
        for name, got in seen.items():
            rate, cpu = statistics.median(got["rate"]), statistics.median(got["cpu"])
            low, high = min(got["cpu"]), max(got["cpu"])
            print(f"{name:8}{rate:12,.0f}{cpu:14.4f}   (CPU range {low:.4f}-{high:.4f})")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
