"""Several keyfob processes on one PostgreSQL database, and a load generator across them.

``start_cluster`` initialises the database once (node 0's data dir holds the master key
file), then starts N ``keyfob serve`` servers as child processes, each with its own data
dir (its own audit checkpoint) and ``KEYFOB_MASTER_KEY_FILE`` pointing at the one shared
key: the topology docs/deploy.md describes. ``spread`` fires requests at once, round
robin over the nodes, and says what each got. Counts that matter are taken from the
fake upstream, never from keyfob's own reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.support.server import ProcessServer, start_server


@dataclass
class Cluster:
    """N keyfob nodes on one database; ``operators[i]`` talks to node i."""

    nodes: list[ProcessServer]
    token: str
    operators: list[httpx.Client] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def stop(self) -> None:
        for client in self.operators:
            client.close()
        for node in self.nodes:
            node.stop()


def start_cluster(
    workdir: Path, database_url: str, n: int = 3, env: dict[str, str] | None = None
) -> Cluster:
    """Initialise the database and start ``n`` nodes on it (in parallel)."""
    first = Settings(data_dir=workdir / "node-0", database_url=database_url)
    init = init_vault(first)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    shared_key = first.resolved_master_key_file

    def start(i: int) -> ProcessServer:
        data_dir = workdir / f"node-{i}"
        data_dir.mkdir(mode=0o700, exist_ok=True)
        settings = Settings(data_dir=data_dir, database_url=database_url)
        extra = {"KEYFOB_MASTER_KEY_FILE": str(shared_key), **(env or {})}
        return start_server(settings, token, workdir / f"node-{i}.log", extra, timeout=120)

    with ThreadPoolExecutor(n) as pool:
        starting = [pool.submit(start, i) for i in range(n)]
        nodes: list[ProcessServer] = []
        failure: BaseException | None = None
        for future in starting:
            try:
                nodes.append(future.result())
            except BaseException as exc:  # stop the ones that did start
                failure = exc
    if failure is not None:
        for node in nodes:
            node.stop()
        raise failure
    cluster = Cluster(nodes, token)
    auth = {"Authorization": f"Bearer {token}"}
    cluster.operators = [httpx.Client(base_url=u, headers=auth, timeout=30) for u in cluster.urls]
    return cluster


@dataclass(frozen=True)
class Call:
    """One request of a load: which node (index), method, path, token, JSON body."""

    node: int
    method: str
    path: str
    token: str
    body: Any = None


@dataclass(frozen=True)
class Answer:
    call: Call
    status: int
    reason: str | None  # a refusal's ``reason``; None for a 2xx
    body: Any


async def spread(cluster: Cluster, calls: Sequence[Call]) -> list[Answer]:
    """Fire every call at once (each to its node) and collect the answers in order."""
    limits = httpx.Limits(max_connections=max(len(calls), 1))
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(call: Call) -> Answer:
            url = cluster.urls[call.node % len(cluster.nodes)] + call.path
            response = await http.request(
                call.method,
                url,
                headers={"Authorization": f"Bearer {call.token}"},
                json=call.body,
            )
            try:
                body = response.json()
            except ValueError:
                body = response.text
            reason = None
            if response.status_code >= 400 and isinstance(body, dict):
                reason = str(body.get("reason") or body.get("type"))
            return Answer(call, response.status_code, reason, body)

        return list(await asyncio.gather(*(one(c) for c in calls)))


def round_robin(n: int, method: str, path: str, token: str, nodes: int = 3) -> list[Call]:
    """``n`` identical requests spread evenly over the nodes."""
    return [Call(i % nodes, method, path, token) for i in range(n)]
