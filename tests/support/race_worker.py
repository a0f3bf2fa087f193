"""A race test worker: open the vault, wait for the start signal, fire concurrent lease uses.

Run as ``python -m tests.support.race_worker JOB.json`` with ``KEYFOB_*`` in the environment.
The job holds a ready file to touch once the vault is open, a start file to wait for, a time
to freeze the vault's clock at, and scenarios (name, lease tokens, number of uses, action,
set). Every use of every scenario is fired at once; prints one JSON line:
``{scenario: {"ok": n, "refused": {reason: n}, "errors": {type: n}}}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from keyfob.clock import FrozenClock, parse_iso
from keyfob.errors import KeyfobError
from keyfob.settings import Settings
from keyfob.vault import Context, Vault

# Four workers share one PostgreSQL server with other test runs: keep each one's
# connection pool small so a race cannot exhaust the server's max_connections. On a
# loaded machine 100 uses queue for those connections longer than SQLAlchemy's default
# 30 s, which would count as errors: wait as long as the test does.
PG_POOL = {"pool_size": 6, "max_overflow": 2, "pool_timeout": 120}


async def _attempt(vault: Vault, token: str, scenario: dict[str, Any]) -> str:
    ctx = Context(actor="race-worker")
    action, path = scenario["action"], scenario["secret_set"]
    try:
        if action == "export":
            await vault.lease_use.export(token, ctx, path, None, "race")
        else:
            await vault.lease_use.use(token, ctx, action=action, secret_set=path, route="race")
    except KeyfobError as exc:
        reason = exc.extra.get("reason")
        return f"refused:{reason}" if reason else f"error:{type(exc).__name__}"
    except Exception as exc:
        return f"error:{type(exc).__name__}"
    return "ok"


def _tally(outcomes: list[str]) -> dict[str, Any]:
    counts = Counter(outcomes)
    return {
        "ok": counts.pop("ok", 0),
        "refused": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("refused:")},
        "errors": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("error:")},
    }


async def _run(job: dict[str, Any]) -> dict[str, Any]:
    clock = FrozenClock(parse_iso(job["clock"])) if job.get("clock") else None
    vault = await Vault.open(Settings(), clock=clock)
    try:
        if not vault.db.is_sqlite:
            await vault.db.engine.dispose()
            vault.db.engine = create_async_engine(vault.db.url, hide_parameters=True, **PG_POOL)
        async with vault.db.read():
            pass  # connect before the start, so the race is not a race to connect
        Path(job["ready"]).touch()
        start = Path(job["start"])
        while not start.exists():
            await asyncio.sleep(0.002)
        plan = [
            (scenario, scenario["tokens"][i % len(scenario["tokens"])])
            for scenario in job["scenarios"]
            for i in range(scenario["count"])
        ]
        outcomes = await asyncio.gather(*(_attempt(vault, token, s) for s, token in plan))
    finally:
        await vault.close()
    return {
        scenario["name"]: _tally(
            [o for (s, _), o in zip(plan, outcomes, strict=True) if s is scenario]
        )
        for scenario in job["scenarios"]
    }


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(_run(job))), flush=True)


if __name__ == "__main__":
    main()
