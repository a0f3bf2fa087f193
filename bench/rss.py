"""Idle memory of a serving keyfob: RSS after one request of each kind, and who imports what.

``.venv/bin/python bench/rss.py [--cli] [--streams N] [--importtime] [--repeat K] [--json PATH]``
starts the fake upstream and keyfob as ``make bench`` does (SQLite on a temporary data
dir, one worker, ``run_server``; ``--cli``: ``keyfob serve`` instead), makes one request
of each kind the benchmark makes (proxied JSON, proxied SSE, invalid lease, lease mint,
batch mint), waits a second and reads ``VmRSS`` from ``/proc``. ``--repeat`` starts that
many servers one after another and prints each. ``--streams N`` then holds N SSE streams
and reports the largest RSS sampled meanwhile. ``--importtime`` starts one more server
under ``python -X importtime`` and prints the top-level packages by cumulative import time
(and how many modules the server has loaded by then).
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

import httpx

from proxy import (
    BATCH,
    JSON_BODY,
    SET_PATH,
    UPSTREAM_PATH,
    Config,
    Keyfob,
    Processes,
    Target,
    _keyfob_env_cleared,
    fake_lease,
    progress,
    raise_fd_limit,
    rss_mb,
    set_up_keyfob,
    sse_spec,
    start_upstream,
)

CLI_ARGV = [
    str(Path(sys.executable).with_name("keyfob")),
    "serve",  # the data dir comes from KEYFOB_DATA_DIR (proxy.keyfob_env)
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
]


def one_of_each(kf: Keyfob) -> None:
    """One request of each kind the benchmark makes, each checked."""
    lease_auth = {"Authorization": f"Bearer {kf.lease}"}
    agent_auth = {"Authorization": f"Bearer {kf.agent_token}"}
    proxied = f"/proxy/{SET_PATH}"
    with httpx.Client(base_url=f"http://127.0.0.1:{kf.port}", timeout=30) as http:
        checks = [
            (http.post(proxied + UPSTREAM_PATH, content=JSON_BODY, headers=lease_auth), 200),
            (http.get(proxied + "/sse?events=3&interval=10", headers=lease_auth), 200),
            (
                http.post(
                    proxied + UPSTREAM_PATH,
                    content=JSON_BODY,
                    headers={"Authorization": f"Bearer {fake_lease()}"},
                ),
                401,
            ),
            (
                http.post(
                    "/v1/leases",
                    json={"secret_set": SET_PATH, "scope": "request"},
                    headers=agent_auth,
                ),
                201,
            ),
            (
                http.post(
                    "/v1/leases",
                    json={"secret_set": SET_PATH, "scope": "request", "count": BATCH},
                    headers=agent_auth,
                ),
                201,
            ),
        ]
    for answer, status in checks:
        if answer.status_code != status:
            raise RuntimeError(f"{answer.request.url.path}: {answer.status_code} {answer.text}")


def idle_rss(procs: Processes, workdir: Path, upstream: str, name: str, cli: bool) -> Keyfob:
    kf = set_up_keyfob(procs, workdir, upstream, name=name, argv=CLI_ARGV if cli else None)
    one_of_each(kf)
    time.sleep(1.0)  # let the requests' garbage settle before "idle"
    return kf


def hold_streams(procs: Processes, kf: Keyfob, streams: int) -> float | None:
    target = Target("keyfob", kf.port, f"/proxy/{SET_PATH}", kf.lease, kf.pid)
    cfg = Config()
    peak: list[float] = []

    def sample() -> None:
        value = rss_mb(kf.pid)
        if value is not None:
            peak.append(value)

    procs.load(sse_spec(target, streams, 1, 20, 100, cfg, 1.0), sample)
    return max(peak) if peak else None


def import_table(log: str, top: int = 15) -> list[tuple[str, int]]:
    """Top-level packages by the import time of all their modules (self time summed, µs),
    from ``-X importtime`` output."""
    totals: dict[str, int] = {}
    for line in log.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        if not own.strip().isdigit():
            continue  # the header line
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0) + int(own)
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", action="store_true", help="start with `keyfob serve`")
    parser.add_argument("--repeat", type=int, default=1, help="servers started in turn")
    parser.add_argument("--streams", type=int, help="also hold this many SSE streams")
    parser.add_argument("--importtime", action="store_true", help="top importers")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-rss-"))
    procs = Processes(workdir)
    out: dict[str, Any] = {"idle_mb": []}
    try:
        with _keyfob_env_cleared():
            upstream, _, _ = start_upstream(procs)
            for i in range(args.repeat):
                name = f"keyfob{i}"
                kf = idle_rss(procs, workdir, upstream, name, args.cli)
                rss = rss_mb(kf.pid)
                out["idle_mb"].append(rss)
                print(f"idle RSS ({'keyfob serve' if args.cli else 'run_server'}): {rss:.1f} MB")
                if args.streams and i == 0:
                    progress(f"holding {args.streams} SSE streams")
                    out["streams_mb"] = hold_streams(procs, kf, args.streams)
                    print(f"RSS holding {args.streams} SSE streams: {out['streams_mb']:.1f} MB")
                if i + 1 < args.repeat:
                    procs.children.pop(name).terminate()
            if args.importtime:
                kf = set_up_keyfob(
                    procs, workdir, upstream, name="importtime", python_flags=("-X", "importtime")
                )
                one_of_each(kf)
                rows = import_table(procs.log("importtime"))
                out["importtime_us"] = dict(rows)
                print("top importers of the server (import time of each package's modules):")
                for package, micros in rows:
                    print(f"  {package:28} {micros / 1000:8.1f} ms")
        for name in list(procs.children):
            procs.check(name)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
