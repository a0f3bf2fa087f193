"""Peers in the same run: keyfob against Portkey's AI gateway and LiteLLM's proxy.

``make bench-peers`` (``python bench/peers.py [--quick] [--rounds N] [--duration S]``)
installs, once, into a scratch folder outside the repository
(``${XDG_CACHE_HOME:-~/.cache}/keyfob-bench-peers``, or ``--scratch``):
Portkey's gateway (npm ``@portkey-ai/gateway``, run with Node) and LiteLLM's proxy
(``litellm[proxy]`` in its own virtualenv). It then starts the stack of ``proxy.py``
(fake upstream, bare pass-through, keyfob) plus both peers, each forwarding to the same
fake upstream with a static key, and measures all five in interleaved rounds: latency
p50 at 1 client and requests/s at 32 clients (``load.py``), with server CPU per request.

How each peer is pointed at the fake upstream (from their documentation):

- Portkey (open-source gateway, no control plane): the OpenAI provider with a custom
  host, per request: ``x-portkey-provider: openai``, ``x-portkey-custom-host:
  http://127.0.0.1:PORT/v1``, and the upstream key as ``Authorization: Bearer``, which
  the gateway forwards. Loopback is on its default trusted custom-host list.
- LiteLLM: ``config.yaml`` with one ``model_list`` entry, ``model: openai/bench``,
  ``api_base: http://127.0.0.1:PORT/v1`` and ``api_key`` (the static key, held by the
  proxy as keyfob holds it); a master key that clients send (LiteLLM refuses to start
  without one); no database; one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import machine, print_machine

from proxy import (
    JSON_BODY,
    LOCAL_KEY,
    UPSTREAM_PATH,
    Config,
    Processes,
    Target,
    _keyfob_env_cleared,
    free_port,
    http_spec,
    progress,
    raise_fd_limit,
    rss_mb,
    start_stack,
    wait_port,
)

PEERS = ("portkey", "litellm")
NAMES = ("direct", "bare", "keyfob", *PEERS)
TARGETS = {"portkey": 4.0, "litellm": 30.0}  # keyfob's 32-client requests/s over the peer's
PORTKEY_PACKAGE = "@portkey-ai/gateway"
LITELLM_PACKAGE = "litellm[proxy]"
LITELLM_CLIENT_KEY = "sk-" + "m" * 44  # as long as a lease token


def scratch_default() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "keyfob-bench-peers"


# -- install -----------------------------------------------------------------------------


def _portkey_dir(scratch: Path) -> Path:
    return scratch / "portkey" / "node_modules" / "@portkey-ai" / "gateway"


def install(scratch: Path) -> None:
    """Install both peers into ``scratch`` unless they are already there."""
    scratch.mkdir(parents=True, exist_ok=True)
    if not (_portkey_dir(scratch) / "build" / "start-server.js").exists():
        progress(f"installing {PORTKEY_PACKAGE} with npm into {scratch / 'portkey'}")
        (scratch / "portkey").mkdir(exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", PORTKEY_PACKAGE],
            cwd=scratch / "portkey",
            check=True,
        )
    litellm = scratch / "litellm" / "bin" / "litellm"
    if not litellm.exists():
        progress(f"installing {LITELLM_PACKAGE} into {scratch / 'litellm'} (a few minutes)")
        subprocess.run([sys.executable, "-m", "venv", str(scratch / "litellm")], check=True)
        pip = str(scratch / "litellm" / "bin" / "pip")
        subprocess.run([pip, "install", "--quiet", LITELLM_PACKAGE], check=True)


def versions(scratch: Path) -> dict[str, str]:
    portkey = json.loads((_portkey_dir(scratch) / "package.json").read_text())["version"]
    python = str(scratch / "litellm" / "bin" / "python")
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    litellm = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return {
        "portkey-ai/gateway": portkey,
        "node": node.stdout.strip(),
        "litellm": litellm.stdout.strip(),
    }


# -- peers -------------------------------------------------------------------------------


def _peer_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    for proxy_var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy_var, None)
    return {**env, **extra}


def start_portkey(procs: Processes, scratch: Path, up_port: int) -> Target:
    port = free_port()
    script = _portkey_dir(scratch) / "build" / "start-server.js"
    env = _peer_env({"NODE_ENV": "production"})  # no UI, no log pages
    pid = procs.start("portkey", ["node", str(script), f"--port={port}", "--headless"], env=env)
    wait_port(procs, "portkey", port, timeout=60)
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{up_port}/v1",
    }
    return PeerTarget("portkey", port, "", LOCAL_KEY, pid, headers)


def start_litellm(procs: Processes, scratch: Path, workdir: Path, up_port: int) -> Target:
    port = free_port()
    config = workdir / "litellm.yaml"
    entry = {
        "model_name": "bench",
        "litellm_params": {
            "model": "openai/bench",
            "api_base": f"http://127.0.0.1:{up_port}/v1",
            "api_key": LOCAL_KEY,
        },
    }
    # Clients authenticate with the master key (LiteLLM refuses to start without one), the
    # nearest thing to keyfob's lease check that needs no database.
    settings = {"master_key": LITELLM_CLIENT_KEY}
    config.write_text(json.dumps({"model_list": [entry], "general_settings": settings}))
    argv = [
        str(scratch / "litellm" / "bin" / "litellm"),
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip
    # The cost map from the package, not fetched from the network at start-up.
    env = _peer_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    pid = procs.start("litellm", argv, env=env)
    wait_port(procs, "litellm", port, timeout=180)
    return PeerTarget("litellm", port, "", LITELLM_CLIENT_KEY, pid, {})


class PeerTarget(Target):
    """A target whose request carries extra headers (Portkey's routing headers)."""

    def __init__(
        self, name: str, port: int, prefix: str, token: str, pid: int, headers: dict[str, str]
    ) -> None:
        super().__init__(name, port, prefix, token, pid)
        self.headers = headers

    def json_request(self, token: str | None = None) -> str:
        head = [
            f"POST {self.prefix}{UPSTREAM_PATH} HTTP/1.1",
            f"host: 127.0.0.1:{self.port}",
            "user-agent: keyfob-bench",
            "accept: */*",
            f"authorization: Bearer {token or self.token}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
            "content-type: application/json",
            f"content-length: {len(JSON_BODY)}",
        ]
        return "\r\n".join(head) + "\r\n\r\n" + JSON_BODY.decode("latin-1")


def check(target: Target) -> None:
    """One request through the peer must come back 200 with the upstream's answer."""
    import socket

    with socket.create_connection(("127.0.0.1", target.port), timeout=60) as sock:
        sock.sendall(
            target.json_request()
            .replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1)
            .encode("latin-1")
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = data.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" " or b"cmpl-bench" not in data:
        raise RuntimeError(f"{target.name} check failed: {data[:600]!r}")


# -- measure -----------------------------------------------------------------------------


def run_rounds(procs: Processes, targets: dict[str, Target], cfg: Config) -> list[Any]:
    out = []
    for n in range(cfg.rounds):
        shift = n % len(NAMES)
        order = NAMES[shift:] + NAMES[:shift]
        result: dict[str, Any] = {}
        for kind, clients in (("latency_1", 1), ("rps_32", 32)):
            result[kind] = {}
            for name in order:
                target = targets[name]
                progress(f"round {n + 1}: {kind} {name}")
                spec = http_spec(target, target.json_request(), clients, cfg)
                result[kind][name] = procs.load(spec, server=target.pid)
        out.append(result)
    return out


def summary(
    rounds: list[Any], rss: dict[str, float | None]
) -> list[tuple[str, str, dict[str, Any]]]:
    def med(kind: str, pick: Any) -> dict[str, Any]:
        values = {}
        for name in NAMES:
            got = [pick(r[kind][name]) for r in rounds]
            got = [g for g in got if g is not None]
            values[name] = statistics.median(got) if got else None
        return values

    return [
        ("latency p50, 1 client", "ms", med("latency_1", lambda r: r["latency_ms"]["p50"])),
        ("requests/s, 32 clients", "req/s", med("rps_32", lambda r: r["rps"])),
        ("latency p50, 32 clients", "ms", med("rps_32", lambda r: r["latency_ms"]["p50"])),
        (
            "server CPU per request, 32 clients",
            "ms",
            med("rps_32", lambda r: r.get("server_cpu_ms_per_request")),
        ),
        ("errors, 32 clients", "%", med("rps_32", lambda r: r["error_rate"] * 100)),
        ("RSS after the runs", "MB", rss),
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def print_report(rows: list[Any], rounds: list[Any], markdown: bool) -> None:
    head = f"{'metric':36}  {'unit':5}" + "".join(f"  {n:>8}" for n in NAMES)
    print(head)
    print("-" * len(head))
    for label, unit, values in rows:
        print(f"{label:36}  {unit:5}" + "".join(f"  {_fmt(values[n]):>8}" for n in NAMES))
    print()
    cpu = rows[3][2]
    for peer, target in (*TARGETS.items(), ("bare", None), ("direct", None)):
        # Per round (the targets ran minutes apart), then the median across rounds.
        per_round = [r["rps_32"]["keyfob"]["rps"] / r["rps_32"][peer]["rps"] for r in rounds]
        ratio = statistics.median(per_round)
        text = f"keyfob / {peer}, requests/s at 32 clients: {ratio:.2f}x (rounds: "
        text += ", ".join(f"{x:.2f}" for x in per_round) + ")"
        if cpu.get(peer) and cpu.get("keyfob"):
            text += f"; {peer} CPU per request / keyfob's: {cpu[peer] / cpu['keyfob']:.2f}x"
        if target is not None:
            text += f"; target ≥ {target:g}x: {'met' if ratio >= target else 'NOT met'}"
        print(text)
    print("per round, requests/s at 32 clients (" + " / ".join(NAMES) + "):")
    for i, r in enumerate(rounds, 1):
        print(f"  round {i}: " + " / ".join(f"{r['rps_32'][n]['rps']:,.0f}" for n in NAMES))
    if markdown:
        print()
        print("| metric | " + " | ".join(NAMES) + " |")
        print("| --- | " + " | ".join("---" for _ in NAMES) + " |")
        for label, unit, values in rows:
            print(f"| {label} ({unit}) | " + " | ".join(_fmt(values[n]) for n in NAMES) + " |")


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--scratch", type=Path, default=scratch_default())
    parser.add_argument("--install-only", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    return Config(rounds=args.rounds, duration=args.duration), args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    install(args.scratch.resolve())
    if args.install_only:
        return 0
    facts = machine()
    print_machine(facts)
    peer_versions = versions(args.scratch)
    print("peers: " + ", ".join(f"{k} {v}" for k, v in peer_versions.items()), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-peers-"))
    procs = Processes(workdir)
    started = time.monotonic()
    try:
        with _keyfob_env_cleared():
            stack = start_stack(procs, workdir)
        up_port = stack.targets["direct"].port
        targets: dict[str, Target] = dict(stack.targets)
        targets["portkey"] = start_portkey(procs, args.scratch, up_port)
        targets["litellm"] = start_litellm(procs, args.scratch, workdir, up_port)
        for peer in PEERS:
            check(targets[peer])
        progress("warm-up")
        for target in targets.values():
            spec = http_spec(target, target.json_request(), 8, cfg)
            procs.load({**spec, "duration": 1.0, "warmup": 0.1})
        rounds = run_rounds(procs, targets, cfg)
        rss = {n: (rss_mb(t.pid) if t.pid else None) for n, t in targets.items()}
        rows = summary(rounds, rss)
        print()
        print_report(rows, rounds, args.markdown)
        for name in ("keyfob", *PEERS):
            with contextlib.suppress(KeyError):
                procs.check(name)
        print(f"took {time.monotonic() - started:.0f} s")
        if args.json:
            raw = {"machine": facts, "peers": peer_versions, "rounds": rounds}
            args.json.write_text(json.dumps(raw, indent=2))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
