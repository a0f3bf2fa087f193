"""``keyfob audit tail|verify|export`` against a fake API."""

from __future__ import annotations

import json
import stat
from typing import Any

import httpx
import pytest

from .conftest import Cli, FakeKeyfob, audit_event, problem

AUDIT = "/v1/audit"


class AuditLog:
    """A fake ``GET /v1/audit`` like the server's: filters ignored; after, limit, order kept."""

    def __init__(self, count: int) -> None:
        self.events = [audit_event(seq) for seq in range(1, count + 1)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        after = int(params.get("after", 0))
        limit = int(params.get("limit", 100))
        matching = [e for e in self.events if e["seq"] > after]
        if params.get("order") == "desc":
            matching.reverse()
        items = matching[:limit]
        cursor = str(items[-1]["seq"]) if len(items) == limit else None
        return httpx.Response(200, json={"items": items, "next_cursor": cursor})

    def append(self, count: int) -> None:
        start = len(self.events) + 1
        self.events += [audit_event(seq, "lease.mint") for seq in range(start, start + count)]


def seqs(jsonl: str) -> list[int]:
    return [json.loads(line)["seq"] for line in jsonl.splitlines()]


def test_tail_shows_the_latest_events_oldest_first(cli: Cli, api: FakeKeyfob):
    api.on("GET", AUDIT, AuditLog(1203))

    result = cli("audit", "tail", "--limit", "3", "--json")

    assert result.exit_code == 0, result.output
    assert seqs(result.stdout) == [1201, 1202, 1203]
    assert len(api.requests) == 1  # newest first from the server, not a scan of the log


def test_tail_passes_filters(cli: Cli, api: FakeKeyfob):
    api.on("GET", AUDIT, AuditLog(0))

    result = cli(
        "audit",
        "tail",
        "--actor",
        "agent:bot",
        "--action",
        "lease.deny",
        "--target",
        "openai/prod/default",
        "--outcome",
        "denied",
    )

    params = api.calls("GET", AUDIT)[0].url.params
    assert (params["actor"], params["action"], params["target"], params["outcome"]) == (
        "agent:bot",
        "lease.deny",
        "openai/prod/default",
        "denied",
    )
    assert result.stdout == "no audit events\n"


def test_tail_human_output_is_a_table(cli: Cli, api: FakeKeyfob):
    api.on("GET", AUDIT, AuditLog(2))

    result = cli("audit", "tail")

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"]
    assert lines[2].split() == [
        "2",
        "2026-11-24",
        "04:48:00",
        "operator:admin",
        "set.create",
        "openai/prod/default",
        "ok",
    ]


def test_follow_polls_after_the_last_seen_event(cli: Cli, api: FakeKeyfob, monkeypatch):
    monkeypatch.setattr("keyfob.cli.audit.PAGE_SIZE", 2)
    log = AuditLog(2)
    api.on("GET", AUDIT, log)
    cli.max_sleeps = 3
    growth = iter([3, 0])  # three new events before the first poll, none before the second
    cli.between_polls = lambda: log.append(next(growth))

    result = cli("audit", "tail", "--follow", "--interval", "0.5", "--json")

    assert result.exit_code == 0, result.output
    assert seqs(result.stdout) == [1, 2, 3, 4, 5]
    afters = [r.url.params.get("after") for r in api.calls("GET", AUDIT)]
    assert afters == [None, "2", "4", "5"]  # two pages in the first poll, one in the second
    assert cli.sleeps == [0.5, 0.5, 0.5]


def verify_report(ok: bool) -> dict[str, Any]:
    return {
        "ok": ok,
        "count": 10,
        "head": "ab" * 32,
        "first_bad": None if ok else {"seq": 7, "reason": "hash mismatch"},
        "checkpoint": None,
        "public_key": "pk",
    }


def test_verify_ok_exits_zero(cli: Cli, api: FakeKeyfob):
    api.on("GET", AUDIT + "/verify", verify_report(ok=True))

    result = cli("audit", "verify")

    assert result.exit_code == 0
    assert result.stdout == "audit log ok: 10 records, head abababababababab\n"


@pytest.mark.parametrize("as_json", [False, True])
def test_verify_broken_exits_one_and_shows_the_bad_record(cli: Cli, api: FakeKeyfob, as_json: bool):
    api.on("GET", AUDIT + "/verify", verify_report(ok=False))
    api.on("GET", AUDIT, AuditLog(10))

    result = cli("audit", "verify", *(["--json"] if as_json else []))

    assert result.exit_code == 1
    if as_json:
        report = json.loads(result.stdout)
        assert report["first_bad"]["seq"] == 7
        assert report["first_bad_record"]["request_id"] == "req-7"
    else:
        assert "first bad record: seq 7: hash mismatch" in result.stdout
        assert '"request_id": "req-7"' in result.stdout


def export_body() -> bytes:
    return b"".join(json.dumps(audit_event(seq)).encode() + b"\n" for seq in (1, 2, 3))


def test_export_to_stdout_is_jsonl(cli: Cli, api: FakeKeyfob):
    api.on("GET", AUDIT + "/export", lambda _r: httpx.Response(200, content=export_body()))

    result = cli("audit", "export")

    assert result.stdout_bytes == export_body()


def test_export_to_file_is_private_and_counted(cli: Cli, api: FakeKeyfob, tmp_path):
    api.on("GET", AUDIT + "/export", lambda _r: httpx.Response(200, content=export_body()))
    target = tmp_path / "audit.jsonl"

    result = cli("audit", "export", "--output", str(target), "--json")

    assert result.exit_code == 0, result.output
    assert target.read_bytes() == export_body()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(result.stdout) == {"output": str(target), "records": 3}


def test_failed_export_leaves_no_file(cli: Cli, api: FakeKeyfob, tmp_path):
    api.on("GET", AUDIT + "/export", lambda _r: problem(503, "unavailable", "database down"))
    target = tmp_path / "audit.jsonl"

    result = cli("audit", "export", "-o", str(target))

    assert result.exit_code == 1
    assert result.stderr == "error: database down (HTTP 503 unavailable)\n"
    assert list(tmp_path.iterdir()) == []
