"""Concurrent lease use from four processes at once: use caps and rate limits hold exactly.

One race per backend: four worker processes (tests/support/race_worker.py) are released
together and fire every scenario's uses at once, each scenario on its own secret set. The
tests then read what the workers saw and what the audit log recorded.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keyfob.clock import isoformat
from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from tests.support.backends import BACKENDS, reset_postgres
from tests.support.server import env_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
OPERATOR = Context(actor="operator:race-setup")
USES = {"lease.use", "secret_set.export", "lease.deny"}


@dataclass
class Scenario:
    name: str
    grant: dict[str, Any]
    lease: dict[str, Any]
    leases: int
    uses: int
    action: str = "proxy"
    tokens: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"race/prod/{self.name}"


def scenarios() -> list[Scenario]:
    return [
        # 200 uses of one single-use lease.
        Scenario("single", {}, {}, leases=1, uses=200),
        # 100 exports through one workflow lease good for 3 uses.
        Scenario(
            "workflow",
            {"actions": ["export"], "scopes": ["workflow"]},
            {"scope": "workflow", "max_uses": 3},
            leases=1,
            uses=100,
            action="export",
        ),
        # 100 uses spread over 5 uncapped workflow leases of a grant allowing 5 a minute.
        Scenario("rate", {"scopes": ["workflow"], "rate_limit": 5}, {"scope": "workflow"}, 5, 100),
    ]


@dataclass
class Raced:
    outcome: dict[str, dict[str, Any]]  # what the workers saw, per scenario
    audit: dict[str, Counter[tuple[str, str | None]]]  # (action, reason) per scenario
    lease_uses: dict[str, int]
    grant_uses: dict[str, int]
    verify: dict[str, Any]


async def _prepare(settings: Settings, plan: list[Scenario]) -> None:
    vault, _ = await Vault.initialise(settings)
    try:
        _, token = await vault.agents.create(OPERATOR, "racer")
        agent = await vault.agents.authenticate(token.reveal(), OPERATOR, "setup")
        for s in plan:
            provider, environment, name = s.path.split("/")
            await vault.sets.create(
                OPERATOR,
                provider=provider,
                environment=environment,
                name=name,
                entries={"API_KEY": f"race-canary-{name}"},
            )
            await vault.grants.create(OPERATOR, {"agent": "racer", "secret_set": s.path, **s.grant})
            for _ in range(s.leases):
                status, lease = await vault.leases.mint(
                    agent, OPERATOR, secret_set=s.path, **s.lease
                )
                assert status == 201
                s.tokens.append(lease["token"].reveal())
    finally:
        await vault.close()


def _race(settings: Settings, workdir: Path, plan: list[Scenario]) -> dict[str, dict[str, Any]]:
    start = workdir / "start"
    # One frozen moment for every worker, so the whole race falls in one rate-limit minute.
    moment = isoformat(datetime.now(UTC))
    procs = []
    for i in range(WORKERS):
        job = {
            "ready": str(workdir / f"ready-{i}"),
            "start": str(start),
            "clock": moment,
            "scenarios": [
                {
                    "name": s.name,
                    "tokens": s.tokens,
                    "count": s.uses // WORKERS + (1 if i < s.uses % WORKERS else 0),
                    "action": s.action,
                    "secret_set": s.path,
                }
                for s in plan
            ],
        }
        path = workdir / f"job-{i}.json"
        path.write_text(json.dumps(job))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.race_worker", str(path)],
                cwd=ROOT,
                env=env_for(settings),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while not all((workdir / f"ready-{i}").exists() for i in range(WORKERS)):
            assert all(p.poll() is None for p in procs), "a worker exited before the start"
            assert time.monotonic() < deadline, "the workers did not get ready"
            time.sleep(0.02)
        start.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    total: dict[str, dict[str, Any]] = {
        s.name: {"ok": 0, "refused": Counter(), "errors": Counter()} for s in plan
    }
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode(errors="replace")
        for name, seen in json.loads(out.decode().strip().splitlines()[-1]).items():
            total[name]["ok"] += seen["ok"]
            total[name]["refused"].update(seen["refused"])
            total[name]["errors"].update(seen["errors"])
    return {
        name: {"ok": t["ok"], "refused": dict(t["refused"]), "errors": dict(t["errors"])}
        for name, t in total.items()
    }


async def _collect(settings: Settings, plan: list[Scenario]) -> tuple[Any, ...]:
    vault = await Vault.open(settings)
    try:
        audit, lease_uses, grant_uses = {}, {}, {}
        for s in plan:
            events = await vault.audit.query(target=f"secret_set:{s.path}", limit=10_000)
            audit[s.name] = Counter(
                (e.action, e.details.get("reason")) for e in events if e.action in USES
            )
            leases = await vault.leases.search(set_path=s.path, active=False)
            lease_uses[s.name] = sum(v["uses"] for v in leases)
            (grant,) = await vault.grants.search(secret_set=s.path)
            grant_uses[s.name] = grant["uses"]
        verify = await vault.audit.verify()
    finally:
        await vault.close()
    return audit, lease_uses, grant_uses, verify


@pytest.fixture(scope="module", params=BACKENDS)
def raced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Raced:
    """One four-process race over every scenario, on a fresh vault of the given backend."""
    workdir = tmp_path_factory.mktemp(f"race-{request.param}")
    url = reset_postgres() if request.param == "postgresql" else None
    settings = Settings(data_dir=workdir / "data", database_url=url)
    plan = scenarios()
    asyncio.run(_prepare(settings, plan))
    outcome = _race(settings, workdir, plan)
    audit, lease_uses, grant_uses, verify = asyncio.run(_collect(settings, plan))
    return Raced(outcome, audit, lease_uses, grant_uses, verify)


def test_single_use_lease_has_exactly_one_winner(raced: Raced) -> None:
    assert raced.outcome["single"] == {"ok": 1, "refused": {"exhausted": 199}, "errors": {}}
    assert raced.audit["single"] == {("lease.use", None): 1, ("lease.deny", "exhausted"): 199}
    assert raced.lease_uses["single"] == 1
    assert raced.grant_uses["single"] == 1


def test_workflow_lease_with_three_uses_has_three_winners(raced: Raced) -> None:
    assert raced.outcome["workflow"] == {"ok": 3, "refused": {"exhausted": 97}, "errors": {}}
    assert raced.audit["workflow"] == {
        ("secret_set.export", None): 3,
        ("lease.deny", "exhausted"): 97,
    }
    assert raced.lease_uses["workflow"] == 3
    assert raced.grant_uses["workflow"] == 3


def test_rate_limit_holds_across_leases_and_processes(raced: Raced) -> None:
    seen = raced.outcome["rate"]
    assert 1 <= seen["ok"] <= 5
    # Every worker's clock stands in one minute, so exactly the limit gets through.
    assert seen == {"ok": 5, "refused": {"rate_limited": 95}, "errors": {}}
    assert raced.audit["rate"] == {("lease.use", None): 5, ("lease.deny", "rate_limited"): 95}
    # Refused attempts gave their lease use back.
    assert raced.lease_uses["rate"] == 5
    assert raced.grant_uses["rate"] == 5


def test_the_audit_chain_is_intact_after_the_race(raced: Raced) -> None:
    assert raced.verify["ok"] is True, raced.verify
    raced_events = sum(sum(c.values()) for c in raced.audit.values())
    assert raced_events == 400
