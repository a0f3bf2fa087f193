"""``keyfob audit tail|verify|export`` against the real app in-process (``real``)."""

from __future__ import annotations

import json
import sqlite3
import stat
from typing import Any

import pytest

from keyfob.vault import Context

from .conftest import Cli, RealKeyfob

AUDIT = "/v1/audit"
OPERATOR = Context(actor="operator:test")


def seqs(jsonl: str) -> list[int]:
    return [json.loads(line)["seq"] for line in jsonl.splitlines()]


def add_agents(real: RealKeyfob, *names: str) -> None:
    """One ``agent.create`` record per name, written by the real vault."""

    async def create() -> None:
        for name in names:
            await real.vault.agents.create(OPERATOR, name)

    real.run(create())


def events(real: RealKeyfob, **params: Any) -> list[dict[str, Any]]:
    """The audit events as the API gives them (oldest first)."""
    with real.http() as http:
        answer = http.get(AUDIT, params={"limit": 1000, **params})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def tamper(real: RealKeyfob, seq: int) -> None:
    """Edit one stored record behind the vault's back, as an attacker with the file would."""
    path = real.settings.data_dir / "keyfob.db"
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit_events SET actor = 'operator:evil' WHERE seq = ?", (seq,))
    conn.close()


def test_tail_shows_the_latest_events_oldest_first(real_cli: Cli, real: RealKeyfob):
    add_agents(real, *(f"bot-{n}" for n in range(10)))
    last = events(real)[-1]["seq"]
    assert last >= 12
    real.requests.clear()

    result = real_cli("audit", "tail", "--limit", "3", "--json")

    assert result.exit_code == 0, result.output
    assert seqs(result.stdout) == [last - 2, last - 1, last]
    assert len(real.requests) == 1  # newest first from the server, not a scan of the log


def test_tail_passes_filters(real_cli: Cli, real: RealKeyfob):
    add_agents(real, "bot", "other")
    with real.http() as http:
        agent = http.post("/v1/agents", json={"name": "asker"}).json()
        assert http.post("/v1/secret-sets", json={
            "provider": "openai", "environment": "prod", "name": "default",
            "entries": {"OPENAI_API_KEY": "sk-" + "x" * 20},
        }).status_code == 201
        denied = http.post(
            "/v1/leases",
            json={"secret_set": "openai/prod/default", "scope": "request"},
            headers={"Authorization": f"Bearer {agent['token']}"},
        )
    assert denied.status_code == 403, denied.text
    (deny,) = [e for e in events(real) if e["outcome"] == "denied"]
    real.requests.clear()

    result = real_cli(
        "audit", "tail", "--json",
        "--actor", deny["actor"],
        "--action", deny["action"],
        "--target", deny["target"],
        "--outcome", "denied",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [deny]
    params = real.calls("GET", AUDIT)[0].url.params
    assert (params["actor"], params["action"], params["target"], params["outcome"]) == (
        deny["actor"],
        "lease.deny",
        "secret_set:openai/prod/default",
        "denied",
    )
    # The same filters with an outcome nothing has: the server finds nothing.
    nothing = real_cli("audit", "tail", "--actor", deny["actor"], "--outcome", "ok")
    assert nothing.stdout == "no audit events\n"


def test_tail_human_output_is_a_table(real_cli: Cli, real: RealKeyfob):
    add_agents(real, "bot")
    newest = events(real)[-1]

    result = real_cli("audit", "tail")

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"]
    day, time = newest["ts"][:10], newest["ts"][11:19]
    assert lines[-1].split() == [
        str(newest["seq"]),
        day,
        time,
        "operator:test",
        "agent.create",
        newest["target"],
        "ok",
    ]
    assert len(lines) == 1 + newest["seq"]  # the header, then one line per event


def test_follow_polls_after_the_last_seen_event(
    real_cli: Cli, real: RealKeyfob, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("keyfob.cli.audit.PAGE_SIZE", 2)
    start = events(real)[-1]["seq"]  # vault.init and the first token
    real_cli.max_sleeps = 3
    growth = iter([["a", "b", "c"], []])  # three new events before the first poll, none after
    real_cli.between_polls = lambda: add_agents(real, *next(growth))
    real.requests.clear()

    result = real_cli("audit", "tail", "--follow", "--interval", "0.5", "--json")

    assert result.exit_code == 0, result.output
    assert seqs(result.stdout) == list(range(1, start + 4))
    afters = [r.url.params.get("after") for r in real.calls("GET", AUDIT)]
    # Two pages in the first poll, then one empty page in the second.
    assert afters == [None, str(start), str(start + 2), str(start + 3)]
    assert real_cli.sleeps == [0.5, 0.5, 0.5]


def test_verify_ok_exits_zero(real_cli: Cli, real: RealKeyfob):
    add_agents(real, "bot")
    with real.http() as http:
        report = http.get(AUDIT + "/verify").json()

    result = real_cli("audit", "verify")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"audit log ok: {report['count']} records, head {report['head'][:16]}\n"
    assert report["count"] == events(real)[-1]["seq"]


@pytest.mark.parametrize("as_json", [False, True])
def test_verify_broken_exits_one_and_shows_the_bad_record(
    real_cli: Cli, real: RealKeyfob, as_json: bool
):
    add_agents(real, "bot", "other")
    edited = events(real)[2]
    tamper(real, edited["seq"])

    result = real_cli("audit", "verify", *(["--json"] if as_json else []))

    assert result.exit_code == 1, result.output
    if as_json:
        report = json.loads(result.stdout)
        assert report["ok"] is False
        assert report["first_bad"]["seq"] == edited["seq"]
        assert report["first_bad_record"]["request_id"] == edited["request_id"]
        assert report["first_bad_record"]["actor"] == "operator:evil"
    else:
        seq = edited["seq"]
        assert f"first bad record: seq {seq}: hash does not match contents" in result.stdout
        assert f'"request_id": "{edited["request_id"]}"' in result.stdout


def exported(real: RealKeyfob) -> bytes:
    with real.http() as http:
        answer = http.get(AUDIT + "/export")
    assert answer.status_code == 200, answer.text
    return answer.content


def test_export_to_stdout_is_jsonl(real_cli: Cli, real: RealKeyfob):
    add_agents(real, "bot", "other")

    result = real_cli("audit", "export")

    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == exported(real)
    assert seqs(result.stdout) == [e["seq"] for e in events(real)]


def test_export_to_file_is_private_and_counted(real_cli: Cli, real: RealKeyfob, tmp_path):
    add_agents(real, "bot", "other")
    target = tmp_path / "audit.jsonl"

    result = real_cli("audit", "export", "--output", str(target), "--json")

    assert result.exit_code == 0, result.output
    assert target.read_bytes() == exported(real)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(result.stdout) == {"output": str(target), "records": len(events(real))}


def test_failed_export_leaves_no_file(real_cli: Cli, real: RealKeyfob, tmp_path):
    wrong = "kfo_" + "W" * 43  # well formed, but no such token: the server refuses it
    target = tmp_path / "out" / "audit.jsonl"
    target.parent.mkdir()

    result = real_cli("audit", "export", "-o", str(target), env={"KEYFOB_TOKEN": wrong})

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "(HTTP 401 unauthorized)" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert list(target.parent.iterdir()) == []
