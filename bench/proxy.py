"""The proxy benchmark: keyfob against a bare pass-through proxy and the upstream itself.

``make bench`` (or ``.venv/bin/python bench/proxy.py [--quick] [--rounds N] [--duration S]
[--json PATH] [--markdown]``) starts, each in its own process on loopback: the fast fake
upstream (``upstream.py``), the bare pass-through proxy (``bare.py``) and keyfob (SQLite
on a temporary data dir, set up through its HTTP API). The load generator (``load.py``)
runs in its own process per measurement. Direct, bare and keyfob are measured back to
back, interleaved, for several rounds; ``report.py`` prints medians across rounds. See
``docs/benchmarks.md`` for what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A sibling module: run as a script, bench/ is first on sys.path.
from report import TARGETS, details, errors_seen, machine, print_machine, summarise, table

HERE = Path(__file__).resolve().parent
SET_PATH = "generic/bench/up"
UPSTREAM_PATH = "/v1/chat/completions"
JSON_BODY = b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"max_tokens":1}'
LOCAL_KEY = "sk-bench-" + "k" * 40  # the upstream key keyfob injects (never in responses)
BATCH = 100  # leases per batch mint
SDK_BATCH = 20  # leases per mint in keyfob.sdk.LeaseAuth's pool (keyfob/sdk/auth.py BATCH)
_B62 = string.digits + string.ascii_letters
_SERVE = (
    "import sys; from pathlib import Path; from keyfob.settings import Settings; "
    "from keyfob.app.bootstrap import run_server; "
    "run_server(Settings(data_dir=Path(sys.argv[1])), '127.0.0.1', int(sys.argv[2]))"
)


@dataclass
class Config:
    rounds: int = 3
    duration: float = 5.0
    warmup: float = 0.5
    grace: float = 5.0
    sse_waves_1: int = 50
    sse_waves_32: int = 8
    ramp: tuple[int, ...] = (64, 128, 256, 512, 1024)
    ramp_seconds: float = 3.0
    ramp_stagger: float = 1.0  # seconds over which a level's streams are opened
    stall_gap: float = 1.0


# -- processes ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the benchmark itself dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Every child the benchmark starts, so all of them are stopped however it ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        log = (self.workdir / f"{name}.log").open("ab")
        with log:  # the child keeps its own descriptor
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops them
                preexec_fn=_die_with_parent,
            )
        self.children[name] = child
        return child.pid

    def check(self, name: str) -> None:
        child = self.children[name]
        if child.poll() is not None:
            raise RuntimeError(f"{name} exited ({child.returncode}):\n{self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def load(
        self,
        spec: dict[str, Any],
        on_tick: Callable[[], None] | None = None,
        server: int | None = None,
    ) -> Any:
        """Run the load generator once; ``on_tick`` is called every 0.1 s while it runs.

        With ``server`` (a pid), the result also says how much CPU that process used: per
        request, and as a share of one core over the run (1.0 = one core busy throughout).
        """
        cpu_before, wall_before = cpu_seconds(server), time.monotonic()
        child = subprocess.Popen(
            [sys.executable, str(HERE / "load.py"), json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.children["load"] = child
        try:
            while child.poll() is None:
                if on_tick is not None:
                    on_tick()
                time.sleep(0.1)
            out, err = child.communicate()
        finally:
            del self.children["load"]
            if child.poll() is None:  # interrupted: this child is not stop()'s any more
                child.kill()
                child.wait()
        if child.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{err.decode(errors='replace')[-3000:]}")
        result: dict[str, Any] = json.loads(out)
        cpu_after = cpu_seconds(server)
        if cpu_before is not None and cpu_after is not None:
            used = cpu_after - cpu_before
            result["server_cpu_share"] = used / (time.monotonic() - wall_before)
            if result.get("completed_total"):
                result["server_cpu_ms_per_request"] = used * 1000 / result["completed_total"]
        return result

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 10
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(procs: Processes, name: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check(name)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start listening:\n{procs.log(name)[-3000:]}")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field_name: str = "VmRSS") -> float | None:
    """A process's resident set (or ``VmHWM``, its peak) in MB, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- requests ----------------------------------------------------------------------------


def raw_request(method: str, path: str, port: int, token: str, body: bytes = b"") -> str:
    """A pre-built HTTP/1.1 keep-alive request, as latin-1 text for the JSON spec."""
    head = [
        f"{method} {path} HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "user-agent: keyfob-bench",
        "accept: */*",
        f"authorization: Bearer {token}",
    ]
    if body:
        head += ["content-type: application/json", f"content-length: {len(body)}"]
    return "\r\n".join(head) + "\r\n\r\n" + body.decode("latin-1")


def mint_request(port: int, agent_token: str, count: int | None = None) -> str:
    """``POST /v1/leases`` for single-use (``request``) leases of the benchmark's set."""
    body: dict[str, Any] = {"secret_set": SET_PATH, "scope": "request"}
    if count is not None:
        body["count"] = count
    return raw_request("POST", "/v1/leases", port, agent_token, json.dumps(body).encode())


def fake_lease() -> str:
    """A well-formed lease token that was never issued."""
    return "kfl_" + "".join(secrets.choice(_B62) for _ in range(43))


@dataclass
class Target:
    name: str
    port: int
    prefix: str  # path prefix in front of the upstream path
    token: str
    pid: int | None = None

    def json_request(self, token: str | None = None) -> str:
        path = self.prefix + UPSTREAM_PATH
        return raw_request("POST", path, self.port, token or self.token, JSON_BODY)

    def sse_request(self, events: int, interval_ms: int) -> str:
        path = f"{self.prefix}/sse?events={events}&interval={interval_ms}"
        return raw_request("GET", path, self.port, self.token)


# -- set-up ------------------------------------------------------------------------------


@dataclass
class Stack:
    targets: dict[str, Target]
    agent_token: str
    keyfob_pid: int
    bare_pid: int
    rss_after_setup: dict[str, float | None] = field(default_factory=dict)


def keyfob_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env["KEYFOB_DATA_DIR"] = str(data_dir)
    env["KEYFOB_LOG_LEVEL"] = "warning"  # uvicorn's access log stays silent below info
    return env


@dataclass
class Keyfob:
    """A started keyfob server with the benchmark's secret set, agent, grant and lease."""

    port: int
    pid: int
    lease: str  # a workflow lease for SET_PATH
    agent_token: str


def set_up_keyfob(
    procs: Processes,
    workdir: Path,
    upstream_url: str,
    *,
    name: str = "keyfob",
    python_flags: tuple[str, ...] = (),
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Keyfob:
    """Initialise a data dir, start keyfob (one worker, SQLite) and set it up through its
    HTTP API, checking one proxied call. ``argv`` replaces the default start command
    (``{data_dir}`` and ``{port}`` in it are filled in); ``env`` adds to its environment
    (``PYTHONPATH`` for another version's ``src``)."""
    import httpx

    from keyfob.app.bootstrap import init_vault
    from keyfob.settings import Settings

    kf_port = free_port()
    data_dir = workdir / f"{name}-data"
    init = init_vault(Settings(data_dir=data_dir))
    assert init.operator_token is not None
    if argv is None:
        command = [sys.executable, *python_flags, "-c", _SERVE, str(data_dir), str(kf_port)]
    else:
        command = [a.format(data_dir=data_dir, port=kf_port) for a in argv]
    keyfob_pid = procs.start(name, command, env={**keyfob_env(data_dir), **(env or {})})
    wait_port(procs, name, kf_port)

    keyfob_url = f"http://127.0.0.1:{kf_port}"
    operator = {"Authorization": f"Bearer {init.operator_token.reveal()}"}
    with httpx.Client(base_url=keyfob_url, headers=operator, timeout=30) as api:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = api.post(path, json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"set-up {path}: {answer.status_code} {answer.text}")
            created: dict[str, Any] = answer.json()
            return created

        provider, environment, set_name = SET_PATH.split("/")
        post(
            "/v1/secret-sets",
            {
                "provider": provider,
                "environment": environment,
                "name": set_name,
                "entries": {"API_KEY": LOCAL_KEY},
                "profile": {
                    "base_url": upstream_url,
                    "hosts": ["127.0.0.1"],
                    "inject": {"kind": "bearer", "key": "API_KEY"},
                    "allow_private_upstream": True,
                },
            },
        )
        agent = post("/v1/agents", {"name": "bench"})
        post(
            "/v1/grants",
            {
                "agent": "bench",
                "secret_set": SET_PATH,
                "scopes": ["request", "workflow"],
                "max_lease_ttl": 86_400,
            },
        )
        agent_auth = {"Authorization": f"Bearer {agent['token']}"}
        minted = api.post(
            "/v1/leases",
            json={"secret_set": SET_PATH, "scope": "workflow", "ttl": 86_400},
            headers=agent_auth,
        )
        if minted.status_code != 201:
            raise RuntimeError(f"set-up lease: {minted.status_code} {minted.text}")
        lease = minted.json()["token"]
        check = api.post(
            f"/proxy/{SET_PATH}{UPSTREAM_PATH}",
            content=JSON_BODY,
            headers={"Authorization": f"Bearer {lease}", "content-type": "application/json"},
        )
        if check.status_code != 200 or b"cmpl-bench" not in check.content:
            raise RuntimeError(f"proxied check: {check.status_code} {check.text[:300]}")
    return Keyfob(kf_port, keyfob_pid, lease, agent["token"])


def start_upstream(procs: Processes) -> tuple[str, int, int]:
    """The fake upstream: (url, port, pid)."""
    up_port = free_port()
    up_pid = procs.start("upstream", [sys.executable, str(HERE / "upstream.py"), str(up_port)])
    wait_port(procs, "upstream", up_port)
    return f"http://127.0.0.1:{up_port}", up_port, up_pid


def start_stack(procs: Processes, workdir: Path) -> Stack:
    upstream_url, up_port, up_pid = start_upstream(procs)
    bare_port = free_port()
    bare_pid = procs.start(
        "bare", [sys.executable, str(HERE / "bare.py"), str(bare_port), upstream_url]
    )
    wait_port(procs, "bare", bare_port)
    kf = set_up_keyfob(procs, workdir, upstream_url)

    # Same header sizes everywhere: direct and bare carry a token as long as the lease.
    stand_in = fake_lease()
    targets = {
        "direct": Target("direct", up_port, "", stand_in, up_pid),
        "bare": Target("bare", bare_port, "", stand_in, bare_pid),
        "keyfob": Target("keyfob", kf.port, f"/proxy/{SET_PATH}", kf.lease, kf.pid),
    }
    return Stack(targets, kf.agent_token, kf.pid, bare_pid)


# -- measurements ------------------------------------------------------------------------


def http_spec(
    target: Target, request: str, connections: int, cfg: Config, expect: int = 200
) -> dict[str, Any]:
    return {
        "mode": "http",
        "host": "127.0.0.1",
        "port": target.port,
        "request": request,
        "expect": expect,
        "connections": connections,
        "duration": cfg.duration,
        "warmup": cfg.warmup,
        "grace": cfg.grace,
    }


def sse_spec(
    target: Target,
    streams: int,
    waves: int,
    events: int,
    interval: int,
    cfg: Config,
    stagger: float = 0.0,
) -> dict[str, Any]:
    return {
        "mode": "sse",
        "host": "127.0.0.1",
        "port": target.port,
        "request": target.sse_request(events, interval),
        "streams": streams,
        "waves": waves,
        "events": events,
        "stall_gap": cfg.stall_gap,
        "timeout": events * interval / 1000 + 10 * cfg.stall_gap,
        "stagger": stagger,
    }


def rotated(round_no: int) -> list[str]:
    """Target order for a round: each target goes first in turn, so order bias evens out."""
    shift = round_no % len(TARGETS)
    return list(TARGETS[shift:] + TARGETS[:shift])


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def run_round(procs: Processes, stack: Stack, cfg: Config, round_no: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    order = rotated(round_no)
    t = stack.targets
    plans: list[tuple[str, Callable[[Target], dict[str, Any]]]] = [
        ("latency_1", lambda tg: http_spec(tg, tg.json_request(), 1, cfg)),
        ("rps_32", lambda tg: http_spec(tg, tg.json_request(), 32, cfg)),
        ("sse_1", lambda tg: sse_spec(tg, 1, cfg.sse_waves_1, 2, 20, cfg)),
        # 32 streams held at once (5 events, 100 ms apart), starts spread over one stream's
        # life: the first byte of a stream opened while 31 others are streaming.
        ("sse_32", lambda tg: sse_spec(tg, 32, cfg.sse_waves_32, 5, 100, cfg, 0.4)),
    ]
    for kind, plan in plans:
        out[kind] = {}
        for name in order:
            progress(f"round {round_no + 1}: {kind} {name}")
            out[kind][name] = procs.load(plan(t[name]), server=t[name].pid)
    kf = t["keyfob"]
    progress(f"round {round_no + 1}: invalid lease")
    invalid = http_spec(kf, kf.json_request(fake_lease()), 1, cfg, 401)
    out["invalid_1"] = procs.load(invalid, server=kf.pid)
    mint = mint_request(kf.port, stack.agent_token)
    for clients in (1, 8):
        progress(f"round {round_no + 1}: lease mint, {clients} client(s)")
        out[f"mint_{clients}"] = procs.load(http_spec(kf, mint, clients, cfg, 201), server=kf.pid)
    batch = mint_request(kf.port, stack.agent_token, BATCH)
    progress(f"round {round_no + 1}: batch mint (count {BATCH}), 8 clients")
    out["mint_batch_8"] = procs.load(http_spec(kf, batch, 8, cfg, 201), server=kf.pid)
    # A fresh single-use lease per call (mint + call, as the SDK does it), against the
    # bare pass-through's rps_32 of this round.
    progress(f"round {round_no + 1}: mint + call, 32 clients")
    pair = {**http_spec(kf, mint, 32, cfg), "mode": "mint_call", "call": kf.json_request("{lease}")}
    out["mint_call_32"] = procs.load(pair, server=kf.pid)
    # The same, with the leases taken from a pool minted SDK_BATCH at a time, as
    # keyfob.sdk's LeaseAuth does it: each call still has its own single-use lease.
    progress(f"round {round_no + 1}: pooled single-use leases (SDK), 32 clients")
    pool_mint = mint_request(kf.port, stack.agent_token, SDK_BATCH)
    pooled = {**http_spec(kf, pool_mint, 32, cfg), "mode": "pool_call", "call": pair["call"]}
    out["pool_call_32"] = procs.load(pooled, server=kf.pid)
    return out


def run_ramp(procs: Processes, stack: Stack, cfg: Config) -> dict[str, Any]:
    """Streams held at once, events every 100 ms; RSS of the proxy sampled meanwhile."""
    events = max(2, round(cfg.ramp_seconds * 10))
    results: dict[str, Any] = {name: {} for name in TARGETS}
    for level in cfg.ramp:
        for name in TARGETS:
            target = stack.targets[name]
            peak: list[float] = []

            def sample(pid: int | None = target.pid, peak: list[float] = peak) -> None:
                value = rss_mb(pid) if pid is not None else None
                if value is not None:
                    peak.append(value)

            progress(f"streams: {level} on {name}")
            spec = sse_spec(target, level, 1, events, 100, cfg, cfg.ramp_stagger)
            result = procs.load(spec, sample)
            result["rss_mb_max"] = max(peak) if peak else None
            results[name][str(level)] = result
    return results


# -- main --------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per request run (default 5)")
    parser.add_argument("--ramp", help="SSE stream levels, as 64,128,256,512,1024")
    parser.add_argument("--json", type=Path, help="save raw results here")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    cfg = Config()
    if args.quick:
        cfg = Config(
            rounds=1,
            duration=1.0,
            warmup=0.25,
            sse_waves_1=20,
            sse_waves_32=2,
            ramp=(256,),
            ramp_seconds=1.5,
            ramp_stagger=0.5,
        )
    if args.rounds:
        cfg.rounds = args.rounds
    if args.duration:
        cfg.duration = args.duration
    if args.ramp:
        cfg.ramp = tuple(int(x) for x in args.ramp.split(","))
    return cfg, args


def raise_fd_limit() -> None:
    """1,024 streams through a proxy are ~2,000 sockets in one process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cleanup below runs
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    raise_fd_limit()
    facts = machine()
    print_machine(facts)
    print(f"config: {asdict(cfg)}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-bench-"))
    procs = Processes(workdir)
    started = time.monotonic()
    try:
        with _keyfob_env_cleared():
            stack = start_stack(procs, workdir)
        time.sleep(1.0)  # let start-up garbage settle before "idle"
        rss: dict[str, Any] = {
            "after_setup": {"bare": rss_mb(stack.bare_pid), "keyfob": rss_mb(stack.keyfob_pid)}
        }
        progress("warm-up")
        for target in stack.targets.values():
            spec = http_spec(target, target.json_request(), 8, cfg)
            procs.load({**spec, "duration": min(1.0, cfg.duration / 2), "warmup": 0.1})
        rounds = [run_round(procs, stack, cfg, i) for i in range(cfg.rounds)]
        ramp = run_ramp(procs, stack, cfg)
        time.sleep(1.0)
        rss["after_runs"] = {"bare": rss_mb(stack.bare_pid), "keyfob": rss_mb(stack.keyfob_pid)}
        rss["peak"] = {
            "bare": rss_mb(stack.bare_pid, "VmHWM"),
            "keyfob": rss_mb(stack.keyfob_pid, "VmHWM"),
        }
        for name in ("upstream", "bare", "keyfob"):
            procs.check(name)
        rows = summarise(rounds, ramp, rss)
        print()
        print(table(rows))
        if args.markdown:
            print()
            print(table(rows, markdown=True))
        print()
        print(details(rounds, ramp))
        problems = errors_seen(rounds)
        if problems:
            print("errors and stalls in the rounds:")
            print("\n".join(f"  {p}" for p in problems))
        logged = procs.log("keyfob").strip().splitlines()
        print(f"keyfob log: {len(logged)} line(s) at level warning or above")
        for line in logged[:10]:
            print(f"  {line}")
        load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"took {time.monotonic() - started:.0f} s; load average at end: {load_end}")
        if args.json:
            raw = {
                "machine": facts,
                "config": asdict(cfg),
                "rounds": rounds,
                "ramp": ramp,
                "rss": rss,
                "summary": [asdict(r) for r in rows],
            }
            args.json.write_text(json.dumps(raw, indent=2))
            print(f"raw results: {args.json}")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _keyfob_env_cleared() -> Iterator[None]:
    """The benchmark's own vault set-up must not pick up the caller's KEYFOB_* settings."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("KEYFOB_")}
    try:
        yield
    finally:
        os.environ.update(saved)


if __name__ == "__main__":
    sys.exit(main())
