"""Several keyfob nodes on one PostgreSQL: throughput at 32 clients with 1, 2 and 3 nodes,
CPU per request, and how fast a revocation made on one node holds on the others.

``make bench-nodes`` (``python bench/nodes.py --database-url postgresql://…/DB [--rounds N]
[--duration S] [--revocations N] [--json PATH]``; the URL defaults to
``KEYFOB_BENCH_DATABASE_URL``, else ``KEYFOB_TEST_DATABASE_URL``). Every table in that
database is dropped first. It starts the fast fake upstream and three ``keyfob serve``
processes (own data dirs, one master key, the one database), sets up a set, an agent and
a workflow lease through node 0, then, in interleaved rounds:

- ``rps_32``: 32 keep-alive clients (``load.py``), the connections spread round robin
  over the first 1, 2 or 3 nodes (what a load balancer does), each sending the proxied
  request back to back. CPU per request is the CPU time the keyfob processes and the
  PostgreSQL backends serving them used during the run, divided by the requests
  completed: on a 2-core machine throughput cannot scale with nodes, CPU per request
  shows what each node costs.
- revocation propagation: mint a workflow lease on node 0, use it on nodes 1 and 2,
  revoke it on node 0; the time from the revocation's answer to the first refused use
  seen on each other node (each probe is one proxied request, its own latency included).
  Measured idle and while the 3-node, 32-client load runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from load import percentiles
from report import machine, print_machine

from proxy import (
    JSON_BODY,
    LOCAL_KEY,
    SET_PATH,
    UPSTREAM_PATH,
    Processes,
    Target,
    _keyfob_env_cleared,
    cpu_seconds,
    free_port,
    keyfob_env,
    progress,
    raise_fd_limit,
    wait_port,
)

HERE = Path(__file__).resolve().parent
NODES = 3
_SERVE = (
    "import sys; from keyfob.settings import Settings; "
    "from keyfob.app.bootstrap import run_server; "
    "run_server(Settings(), '127.0.0.1', int(sys.argv[1]))"
)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _drop_tables(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        names = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        if names:
            await conn.execute(
                "DROP TABLE IF EXISTS " + ", ".join(f'"{n}"' for n in names) + " CASCADE"
            )
    finally:
        await conn.close()


async def _backends(url: str) -> list[int]:
    """Server pids of the connections to the database (the nodes' pools), but this one."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


class Cluster:
    def __init__(self, procs: Processes, workdir: Path, url: str) -> None:
        self.procs = procs
        self.workdir = workdir
        self.url = url
        self.ports: list[int] = []
        self.pids: list[int] = []
        self.operator = ""
        self.agent = ""
        self.lease = ""

    def start(self) -> Target:
        import httpx

        from keyfob.app.bootstrap import init_vault
        from keyfob.settings import Settings

        asyncio.run(_drop_tables(self.url))
        up_port = free_port()
        up_pid = self.procs.start(
            "upstream", [sys.executable, str(HERE / "upstream.py"), str(up_port)]
        )
        first = self.workdir / "node-0"
        init = init_vault(Settings(data_dir=first, database_url=self.url))
        assert init.operator_token is not None
        self.operator = init.operator_token.reveal()
        key = Settings(data_dir=first, database_url=self.url).resolved_master_key_file
        for i in range(NODES):
            data_dir = self.workdir / f"node-{i}"
            data_dir.mkdir(mode=0o700, exist_ok=True)
            env = {
                **keyfob_env(data_dir),
                "KEYFOB_DATABASE_URL": self.url,
                "KEYFOB_MASTER_KEY_FILE": str(key),
            }
            port = free_port()
            self.pids.append(
                self.procs.start(f"node-{i}", [sys.executable, "-c", _SERVE, str(port)], env=env)
            )
            self.ports.append(port)
        wait_port(self.procs, "upstream", up_port)
        for i, port in enumerate(self.ports):
            wait_port(self.procs, f"node-{i}", port, timeout=60)

        upstream_url = f"http://127.0.0.1:{up_port}"
        with httpx.Client(
            base_url=self.base(0),
            headers={"Authorization": f"Bearer {self.operator}"},
            timeout=30,
        ) as api:
            provider, environment, name = SET_PATH.split("/")
            profile = {
                "base_url": upstream_url,
                "hosts": ["127.0.0.1"],
                "inject": {"kind": "bearer", "key": "API_KEY"},
                "allow_private_upstream": True,
            }
            for path, body in (
                (
                    "/v1/secret-sets",
                    {
                        "provider": provider,
                        "environment": environment,
                        "name": name,
                        "entries": {"API_KEY": LOCAL_KEY},
                        "profile": profile,
                    },
                ),
                ("/v1/agents", {"name": "bench"}),
                (
                    "/v1/grants",
                    {
                        "agent": "bench",
                        "secret_set": SET_PATH,
                        "scopes": ["request", "workflow"],
                        "max_lease_ttl": 86_400,
                    },
                ),
            ):
                answer = api.post(path, json=body)
                if answer.status_code != 201:
                    raise RuntimeError(f"set-up {path}: {answer.status_code} {answer.text}")
                if path == "/v1/agents":
                    self.agent = answer.json()["token"]
        self.lease = self.mint(0, ttl=86_400)["token"]
        for i in range(NODES):
            status, _ = self.call(i, self.lease)
            if status != 200:
                raise RuntimeError(f"proxied check on node {i}: {status}")
        return Target("keyfob", self.ports[0], f"/proxy/{SET_PATH}", self.lease, up_pid)

    def base(self, node: int) -> str:
        return f"http://127.0.0.1:{self.ports[node]}"

    def mint(self, node: int, ttl: int = 600) -> dict[str, Any]:
        import httpx

        answer = httpx.post(
            self.base(node) + "/v1/leases",
            json={"secret_set": SET_PATH, "scope": "workflow", "ttl": ttl},
            headers={"Authorization": f"Bearer {self.agent}"},
            timeout=30,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"mint: {answer.status_code} {answer.text}")
        minted: dict[str, Any] = answer.json()
        return minted

    def call(self, node: int, lease: str, client: Any = None) -> tuple[int, float]:
        """One proxied request through ``node``: (status, monotonic time of the answer)."""
        import httpx

        send = client.post if client is not None else httpx.post
        answer = send(
            self.base(node) + f"/proxy/{SET_PATH}{UPSTREAM_PATH}",
            content=JSON_BODY,
            headers={"Authorization": f"Bearer {lease}", "content-type": "application/json"},
            timeout=30,
        )
        return answer.status_code, time.monotonic()

    def cpu(self, nodes: int, backends: list[int]) -> dict[str, float]:
        node_cpu = sum(cpu_seconds(p) or 0.0 for p in self.pids[:nodes])
        pg_cpu = sum(cpu_seconds(p) or 0.0 for p in backends)
        return {"keyfob": node_cpu, "postgres": pg_cpu}


def rps_run(cluster: Cluster, target: Target, nodes: int, duration: float) -> dict[str, Any]:
    spec = {
        "mode": "http",
        "host": "127.0.0.1",
        "port": cluster.ports[0],
        "ports": cluster.ports[:nodes],
        "request": target.json_request(),
        "expect": 200,
        "connections": 32,
        "duration": duration,
        "warmup": 0.5,
        "grace": 10,
    }
    backends = asyncio.run(_backends(cluster.url))
    before = cluster.cpu(nodes, backends)
    result: dict[str, Any] = cluster.procs.load(spec)
    after = cluster.cpu(nodes, backends)
    done = result.get("completed_total") or 0
    for part in ("keyfob", "postgres"):
        used = after[part] - before[part]
        result[f"{part}_cpu_ms_per_request"] = used * 1000 / done if done else None
    result["nodes"] = nodes
    return result


LATE: list[int] = []  # uses a node still accepted after the revocation was answered


def revocations(cluster: Cluster, count: int) -> list[float]:
    """Seconds from a revocation's answer on node 0 to a refused use on nodes 1 and 2."""
    import httpx

    seen: list[float] = []
    operator = {"Authorization": f"Bearer {cluster.operator}"}
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            lease = cluster.mint(0)
            for node in range(1, NODES):
                status, _ = cluster.call(node, lease["token"], client)
                if status != 200:
                    raise RuntimeError(f"lease not usable on node {node}: {status}")
            answer = client.delete(cluster.base(0) + f"/v1/leases/{lease['id']}", headers=operator)
            revoked_at = time.monotonic()
            if answer.status_code != 200:
                raise RuntimeError(f"revoke: {answer.status_code} {answer.text}")
            for node in range(1, NODES):
                while True:
                    status, at = cluster.call(node, lease["token"], client)
                    if status == 403:
                        seen.append(at - revoked_at)
                        break
                    LATE.append(status)
                    if at - revoked_at > 10:
                        raise RuntimeError(f"node {node} still takes a revoked lease after 10 s")
    return seen


def ms(values: list[float]) -> dict[str, float | None]:
    return {k: (v * 1000 if v is not None else None) for k, v in percentiles(values).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("KEYFOB_BENCH_DATABASE_URL")
        or os.environ.get("KEYFOB_TEST_DATABASE_URL"),
        help="a PostgreSQL database to use (every table in it is dropped first)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--revocations", type=int, default=50)
    parser.add_argument("--json", type=Path, help="save raw results here")
    args = parser.parse_args(argv)
    if not args.database_url or not args.database_url.startswith(("postgresql", "postgres")):
        parser.error("needs --database-url postgresql://… (or KEYFOB_BENCH_DATABASE_URL)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()
    facts = machine()
    print_machine(facts)
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-bench-nodes-"))
    procs = Processes(workdir)
    started = time.monotonic()
    try:
        cluster = Cluster(procs, workdir, args.database_url)
        with _keyfob_env_cleared():
            target = cluster.start()
        progress("warm-up")
        rps_run(cluster, target, NODES, 1.0)
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in range(1, NODES + 1)}
        for round_no in range(args.rounds):
            order = [1, 2, 3][round_no % 3 :] + [1, 2, 3][: round_no % 3]
            for nodes in order:
                progress(f"round {round_no + 1}: 32 clients on {nodes} node(s)")
                runs[nodes].append(rps_run(cluster, target, nodes, args.duration))
        progress(f"revocations, idle: {args.revocations}")
        idle = revocations(cluster, args.revocations)
        progress("revocations under load (3 nodes, 32 clients)")
        loaded: list[float] = []
        worker = threading.Thread(
            target=lambda: loaded.extend(revocations(cluster, args.revocations))
        )
        load_result: dict[str, Any] = {}
        background = threading.Thread(
            target=lambda: load_result.update(
                rps_run(cluster, target, NODES, max(args.duration, 3.0) * 2)
            )
        )
        background.start()
        time.sleep(1.0)
        worker.start()
        worker.join()
        background.join()
        for i in range(NODES):
            procs.check(f"node-{i}")

        def med(values: list[Any]) -> float | None:
            clean = sorted(v for v in values if v is not None)
            return clean[len(clean) // 2] if clean else None

        print()
        print(
            "| nodes | requests/s (32 clients) | errors | keyfob CPU ms/request | "
            "PostgreSQL CPU ms/request | p50 latency |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        summary: dict[str, Any] = {}
        for nodes, results in runs.items():
            row = {
                "rps": med([r["rps"] for r in results]),
                "errors": sum(r["errors"] for r in results),
                "keyfob_cpu_ms": med([r["keyfob_cpu_ms_per_request"] for r in results]),
                "postgres_cpu_ms": med([r["postgres_cpu_ms_per_request"] for r in results]),
                "p50_ms": med([r["latency_ms"]["p50"] for r in results]),
            }
            summary[str(nodes)] = row
            print(
                f"| {nodes} | {row['rps']:,.0f} | {row['errors']} | {row['keyfob_cpu_ms']:.2f} | "
                f"{row['postgres_cpu_ms']:.2f} | {row['p50_ms']:.2f} ms |"
            )
        print()
        for name, values in (("idle", idle), ("under load", loaded)):
            p = ms(values)
            print(
                f"revocation propagation {name} ({len(values)} observations): "
                f"p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms"
            )
        print(f"background load during it: {load_result.get('rps', 0):,.0f} requests/s")
        print(f"uses accepted by another node after a revocation was answered: {len(LATE)}")
        load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"took {time.monotonic() - started:.0f} s; load average at end: {load_end}")
        if args.json:
            raw = {
                "machine": facts,
                "runs": runs,
                "summary": summary,
                "revocation_s": {"idle": idle, "under_load": loaded},
            }
            args.json.write_text(json.dumps(raw, indent=2))
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
