"""A keyfob vault for the side benchmarks: set up through the HTTP API, stopped, started again.

``proxy.py`` sets up one keyfob next to the fake upstream and the bare proxy; the growth
and verify benchmarks need vaults they can stop, seed (``seed.py``) and start again on
the same data directory, so the lease and tokens survive the restart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import (
    _SERVE,
    JSON_BODY,
    LOCAL_KEY,
    SET_PATH,
    UPSTREAM_PATH,
    Processes,
    Target,
    _keyfob_env_cleared,
    free_port,
    keyfob_env,
    wait_port,
)


@dataclass
class Vault:
    name: str  # the process name in ``Processes``
    data_dir: Path
    operator_token: str
    port: int = 0
    pid: int | None = None
    lease: str = ""
    agent_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def target(self) -> Target:
        return Target(self.name, self.port, f"/proxy/{SET_PATH}", self.lease, self.pid)


def create(procs: Processes, name: str, data_dir: Path) -> Vault:
    """A new vault in ``data_dir`` (not yet running)."""
    from keyfob.app.bootstrap import init_vault
    from keyfob.settings import Settings

    with _keyfob_env_cleared():
        init = init_vault(Settings(data_dir=data_dir))
    assert init.operator_token is not None
    return Vault(name, data_dir, init.operator_token.reveal())


def start(procs: Processes, vault: Vault) -> None:
    vault.port = free_port()
    argv = [sys.executable, "-c", _SERVE, str(vault.data_dir), str(vault.port)]
    vault.pid = procs.start(vault.name, argv, env=keyfob_env(vault.data_dir))
    wait_port(procs, vault.name, vault.port, timeout=120)


def stop(procs: Processes, vault: Vault) -> None:
    child = procs.children.pop(vault.name)
    child.terminate()
    child.wait(timeout=30)
    vault.pid = None


def configure(vault: Vault, upstream_url: str) -> None:
    """The set, agent, grant and workflow lease of ``proxy.start_stack``, on this vault."""
    import httpx

    operator = {"Authorization": f"Bearer {vault.operator_token}"}
    with httpx.Client(base_url=vault.url, headers=operator, timeout=60) as api:

        def post(path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
            answer = api.post(path, json=body, **kw)
            if answer.status_code != 201:
                raise RuntimeError(f"set-up {path}: {answer.status_code} {answer.text}")
            created: dict[str, Any] = answer.json()
            return created

        provider, environment, name = SET_PATH.split("/")
        profile = {
            "base_url": upstream_url,
            "hosts": ["127.0.0.1"],
            "inject": {"kind": "bearer", "key": "API_KEY"},
            "allow_private_upstream": True,
        }
        body = {"provider": provider, "environment": environment, "name": name}
        post("/v1/secret-sets", {**body, "entries": {"API_KEY": LOCAL_KEY}, "profile": profile})
        vault.agent_token = post("/v1/agents", {"name": "bench"})["token"]
        grant = {"agent": "bench", "secret_set": SET_PATH, "scopes": ["request", "workflow"]}
        post("/v1/grants", {**grant, "max_lease_ttl": 86_400})
        lease = {"secret_set": SET_PATH, "scope": "workflow", "ttl": 86_400}
        agent = {"Authorization": f"Bearer {vault.agent_token}"}
        vault.lease = post("/v1/leases", lease, headers=agent)["token"]
    check(vault)


def check(vault: Vault) -> None:
    """One proxied request with the lease must reach the upstream."""
    import httpx

    answer = httpx.post(
        f"{vault.url}/proxy/{SET_PATH}{UPSTREAM_PATH}",
        content=JSON_BODY,
        headers={"Authorization": f"Bearer {vault.lease}", "content-type": "application/json"},
        timeout=60,
    )
    if answer.status_code != 200 or b"cmpl-bench" not in answer.content:
        raise RuntimeError(
            f"proxied check on {vault.name}: {answer.status_code} {answer.text[:300]}"
        )
