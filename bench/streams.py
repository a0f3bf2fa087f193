"""Concurrent SSE streams on one worker: the stall test up to 1,024 streams, and RSS at 256.

``python bench/streams.py [--quick] [--ramp 256,512,1024] [--seconds S]`` starts the stack
of ``proxy.py`` (fake upstream, bare pass-through, keyfob with one worker) and runs its
stall test (``proxy.run_ramp``) at each level against direct, bare and keyfob: that
many streams of 10 events a second, opened over ``--stagger`` seconds and then held
together, each stream stalling if any gap between body arrivals exceeds 1 s, an event is
missing or it does not finish. RSS of the proxies is sampled every 0.1 s meanwhile.
Targets: keyfob holds ≥ 1,024 streams without a stall; ≤ 200 MB RSS at 256 streams.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import TARGETS, machine, max_without_stalls, print_machine

from proxy import (
    Config,
    Processes,
    _keyfob_env_cleared,
    progress,
    raise_fd_limit,
    rss_mb,
    run_ramp,
    start_stack,
)

STREAMS_TARGET = 1024
RSS_LEVEL, RSS_TARGET = 256, 200.0


def report(ramp: dict[str, Any], idle: dict[str, float | None], markdown: bool) -> None:
    held = {n: max_without_stalls(ramp[n]) for n in TARGETS}
    rss256 = {n: ramp[n].get(str(RSS_LEVEL), {}).get("rss_mb_max") for n in TARGETS}
    top = str(max(int(level) for level in ramp["keyfob"]))
    rss_top = {n: ramp[n][top].get("rss_mb_max") for n in TARGETS}
    rows = [
        ("SSE streams without stalls", "streams", held, f"≥ {STREAMS_TARGET:,}"),
        ("RSS idle after set-up", "MB", idle, ""),
        (f"RSS holding {RSS_LEVEL} SSE streams", "MB", rss256, f"≤ {RSS_TARGET:.0f} MB"),
        (f"RSS holding {int(top):,} SSE streams", "MB", rss_top, ""),
    ]

    def fmt(v: Any) -> str:
        return "—" if v is None else f"{v:,.0f}" if isinstance(v, int) else f"{v:.1f}"

    def met(label: str, value: Any) -> str:
        if value is None:
            return "—"
        if label.startswith("SSE"):
            return "yes" if value >= STREAMS_TARGET else "NO"
        if label.startswith(f"RSS holding {RSS_LEVEL} "):
            return "yes" if value <= RSS_TARGET else "NO"
        return ""

    head = f"{'metric':30}  {'unit':7}  {'direct':>7}  {'bare':>7}  {'keyfob':>7}  target       met"
    print(head)
    print("-" * len(head))
    for label, unit, values, target in rows:
        cells = "  ".join(f"{fmt(values.get(n)):>7}" for n in TARGETS)
        print(f"{label:30}  {unit:7}  {cells}  {target:11}  {met(label, values.get('keyfob'))}")
    print("levels (stalled / first byte p50, p99 / max gap / events / RSS):")
    for name in TARGETS:
        for level, res in ramp[name].items():
            fb = res["first_byte_ms"]
            rss = res.get("rss_mb_max")
            kinds = f" {res['stall_kinds']}" if res["stall_kinds"] else ""
            p50 = "—" if fb["p50"] is None else f"{fb['p50']:.2f}"
            p99 = "—" if fb["p99"] is None else f"{fb['p99']:.2f}"
            print(
                f"  {name:6} {int(level):5} streams: {res['stalls']} stalled{kinds}; "
                f"first byte {p50}, {p99} ms; max gap {res['max_gap_ms']:.0f} ms; "
                f"events {res['events_received']}/{res['events_expected']}"
                + (f"; RSS {rss:.1f} MB" if rss is not None else "")
            )
    if markdown:
        print()
        print("| metric | direct | bare | keyfob | target | met |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, unit, values, target in rows:
            cells = " | ".join(fmt(values.get(n)) for n in TARGETS)
            verdict = met(label, values.get("keyfob")) or "—"
            print(f"| {label} ({unit}) | {cells} | {target or '—'} | {verdict} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="levels 256 and 1024, 2 s each")
    parser.add_argument("--ramp", default="256,512,1024", help="stream levels")
    parser.add_argument("--seconds", type=float, default=3.0, help="each level's stream life")
    parser.add_argument("--stagger", type=float, default=1.0, help="seconds to open a level")
    parser.add_argument(
        "--open-rate",
        type=float,
        help="open a level's streams at this many per second (stagger = level / rate, "
        "stream life = stagger + 2 s, so all are held together): a test of holding "
        "streams rather than of accepting a burst of connections",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.ramp, args.seconds = "256,1024", 2.0
    levels = tuple(int(x) for x in args.ramp.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    print_machine(machine())
    plans = []
    for level in levels:
        stagger = max(args.stagger, level / args.open_rate) if args.open_rate else args.stagger
        seconds = max(args.seconds, stagger + 2) if args.open_rate else args.seconds
        plans.append(Config(ramp=(level,), ramp_seconds=seconds, ramp_stagger=stagger))
        print(f"level {level}: {seconds:g} s of events every 100 ms, opened over {stagger:g} s")
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-streams-"))
    procs = Processes(workdir)
    started = time.monotonic()
    try:
        with _keyfob_env_cleared():
            stack = start_stack(procs, workdir)
        time.sleep(1.0)
        idle = {"bare": rss_mb(stack.bare_pid), "keyfob": rss_mb(stack.keyfob_pid)}
        progress("streams")
        ramp: dict[str, Any] = {name: {} for name in TARGETS}
        for plan in plans:
            for name, results in run_ramp(procs, stack, plan).items():
                ramp[name].update(results)
        for name in ("upstream", "bare", "keyfob"):
            procs.check(name)
        print()
        report(ramp, idle, args.markdown)
        logged = procs.log("keyfob").strip().splitlines()
        print(f"keyfob log: {len(logged)} line(s) at level warning or above")
        for line in logged[:5]:
            print(f"  {line}")
        print(f"took {time.monotonic() - started:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({"ramp": ramp, "idle": idle}, indent=2))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
