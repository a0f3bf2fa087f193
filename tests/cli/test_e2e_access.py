"""Agents, grants, leases and export through the CLI against a real server.

Tokens are printed exactly once (when created); secret values appear in no output but
``set export``'s, and in no server log line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from keyfob.cli.entries import parse_dotenv
from keyfob.clock import parse_iso
from keyfob.tokens import AGENT, LEASE, looks_like

from .conftest import Operator

SET = "openai/prod/default"


def only_token(output: str, prefix: str) -> str:
    """The one token of kind ``prefix`` in ``output``, which must be alone on its line."""
    (token,) = [line for line in output.splitlines() if looks_like(line, prefix)]
    return token


def make_set(operator: Operator, canary: str) -> None:
    operator.ok("set", "create", SET, "--preset", "openai", "--key", "OPENAI_API_KEY", input=canary)
    operator.ok("set", "put", SET, "--key", "OPENAI_ORG", input=f"org {canary[-4:]}'s")


def make_agent(operator: Operator, name: str = "billing-bot") -> str:
    created = operator.ok("agent", "create", name)
    assert "you will not see it again" in created.stdout
    return only_token(created.stdout, AGENT)


def test_agent_grant_lease_export_revoke(operator: Operator, canary: str):
    make_set(operator, canary)
    agent_token = make_agent(operator)
    assert operator.json("agent", "show", "billing-bot")["status"] == "active"
    assert "billing-bot" in operator.ok("agent", "list").stdout

    before = datetime.now(UTC)
    grant = operator.json(
        "grant", "create", "--agent", "billing-bot", "--set", SET,
        "--action", "proxy", "--action", "export", "--scope", "request", "--scope", "workflow",
        "--ttl", "2h", "--method", "POST", "--path", "/v1/chat/*",
    )  # fmt: skip
    assert grant["actions"] == ["proxy", "export"]
    expires = parse_iso(grant["expires_at"])
    assert before + timedelta(hours=2) - timedelta(seconds=5) <= expires
    assert expires <= datetime.now(UTC) + timedelta(hours=2)
    assert grant["id"] in operator.ok("grant", "list", "--agent", "billing-bot").stdout
    shown = operator.ok("grant", "show", grant["id"]).stdout
    assert "/v1/chat/*" in shown

    mine = operator.json("me", "grants", token=agent_token)
    assert mine["agent"] == "billing-bot"
    assert [item["secret_set"] for item in mine["items"]] == [SET]
    assert "OPENAI_API_KEY" in operator.ok("me", "grants", token=agent_token).stdout

    as_operator = operator("lease", "mint", "--set", SET)
    assert as_operator.exit_code == 1
    assert "KEYFOB_TOKEN holds an operator token" in as_operator.stderr

    minted = operator.ok(
        "lease", "mint", "--set", SET, "--scope", "workflow", "--max-uses", "3", token=agent_token
    )
    lease = only_token(minted.stdout, LEASE)
    with_lease = {"KEYFOB_LEASE": lease}

    allowed = operator.ok(
        "lease", "check", "--method", "POST", "--path", "/v1/chat/completions", env=with_lease
    )
    assert allowed.stdout.splitlines()[0] == "allowed"
    wrong_path = operator("lease", "check", "--method", "POST", "--path", "/v1/files", input=lease)
    assert wrong_path.exit_code == 1
    assert wrong_path.stdout.splitlines()[0] == "denied (reason: path_not_allowed)"
    export_check = operator.json("lease", "check", "--action", "export", env=with_lease)
    assert export_check["allowed"] is True
    assert export_check["lease"]["uses"] == 0  # checking consumes nothing

    leases = operator.json("lease", "list", "--agent", "billing-bot")["items"]
    (listed,) = leases
    assert listed["scope"] == "workflow"

    exported = operator.ok("set", "export", SET, env=with_lease, reveals=True)
    values = {name: value.reveal() for name, value in parse_dotenv(exported.stdout, "x").items()}
    assert values == {"OPENAI_API_KEY": canary, "OPENAI_ORG": f"org {canary[-4:]}'s"}
    only_org = operator.json(
        "set", "export", SET, "--key", "OPENAI_ORG", env=with_lease, reveals=True
    )
    assert list(only_org["entries"]) == ["OPENAI_ORG"]
    assert operator.json("set", "show", SET)["exported_at"] is not None
    events = [
        json.loads(line)
        for line in operator.ok(
            "audit", "tail", "--action", "secret_set.export", "--json"
        ).stdout.splitlines()
    ]
    assert [event["details"]["keys"] for event in events] == [
        ["OPENAI_API_KEY", "OPENAI_ORG"],
        ["OPENAI_ORG"],
    ]

    assert operator.json("lease", "revoke", listed["id"])["status"] == "revoked"
    revoked = operator("lease", "check", env=with_lease)
    assert revoked.exit_code == 1
    assert "denied (reason: revoked)" in revoked.stdout
    refused = operator("set", "export", SET, env=with_lease, reveals=True)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr.rstrip().endswith("(reason: revoked)")

    updated = operator.json("grant", "update", grant["id"], "--rate-limit", "1", "--clear", "paths")
    assert updated["rate_limit"] == 1
    assert updated["paths"] is None
    second = only_token(
        operator.ok("lease", "mint", "--set", SET, "--scope", "workflow", token=agent_token).stdout,
        LEASE,
    )
    # One use a minute: of three quick exports (two windows at most), one or more is refused.
    attempts = [
        operator("set", "export", SET, env={"KEYFOB_LEASE": second}, reveals=True) for _ in range(3)
    ]
    limited = [result for result in attempts if result.exit_code != 0]
    assert limited
    for result in limited:
        assert result.stdout == ""
        assert "retry in" in result.stderr
        assert result.stderr.rstrip().endswith("(reason: rate_limited)")

    bulk = operator.json("lease", "revoke", "--agent", "billing-bot")
    assert bulk["revoked"] == 1
    assert operator.ok("lease", "list").stdout == "no active leases\n"
    operator.ok("grant", "revoke", grant["id"])
    assert operator.ok("grant", "list").stdout == "no grants\n"
    assert operator.json("grant", "list", "--include-revoked")["items"][0]["revoked_at"]

    # Each token was printed once, by the command that created it, and never logged.
    for token in (agent_token, lease, second):
        assert operator.mentions(token) == 1
        assert not any(token in output for output in operator.revealed)
        assert token not in operator.server.log_text()


def test_agent_token_rotation_disable_and_delete(operator: Operator):
    old = make_agent(operator)
    assert operator.json("me", "grants", token=old)["items"] == []

    rotated = operator.ok("agent", "rotate-token", "billing-bot")
    new = only_token(rotated.stdout, AGENT)
    assert new != old
    stale = operator("me", "grants", token=old)
    assert stale.exit_code == 1
    assert stale.stderr.rstrip().endswith("(HTTP 401 unauthorized)")
    assert operator("me", "grants", token=new).exit_code == 0

    assert operator.json("agent", "disable", "billing-bot")["status"] == "disabled"
    assert operator("me", "grants", token=new).exit_code == 1
    assert operator.json("agent", "enable", "billing-bot")["status"] == "active"
    assert operator("me", "grants", token=new).exit_code == 0

    assert operator("agent", "delete", "billing-bot").exit_code == 1  # no terminal, no --yes
    assert operator.json("agent", "delete", "billing-bot", "--yes")["deleted"] is True
    gone = operator("agent", "show", "billing-bot")
    assert gone.stderr.rstrip().endswith("(HTTP 404 not-found)")
    assert operator.mentions(old) == 1
    assert operator.mentions(new) == 1


def test_approval_required(operator: Operator, canary: str):
    make_set(operator, canary)
    agent_token = make_agent(operator)
    operator.ok("grant", "create", "--agent", "billing-bot", "--set", SET, "--approval", "required")

    pending = operator.json("lease", "mint", "--set", SET, token=agent_token)
    assert pending["status"] == "pending"
    waiting = operator.ok("lease", "requests")
    assert pending["id"] in waiting.stdout
    assert "billing-bot" in waiting.stdout
    operator.ok("lease", "approve", pending["id"])
    issued = operator.ok("lease", "poll", pending["id"], "--wait", "5", token=agent_token)
    lease = only_token(issued.stdout, LEASE)
    assert operator.ok("lease", "check", env={"KEYFOB_LEASE": lease}).stdout.startswith("allowed")
    again = operator("lease", "poll", pending["id"], token=agent_token)
    assert again.exit_code == 1
    assert "already issued" in again.stderr

    denied = operator.json("lease", "mint", "--set", SET, token=agent_token)
    operator.ok("lease", "deny", denied["id"])
    refused = operator("lease", "poll", denied["id"], token=agent_token)
    assert refused.exit_code == 1
    assert f"lease request {denied['id']} is denied" in refused.stderr
    assert operator.json("lease", "requests", "--status", "all")["items"]
    assert operator.mentions(lease) == 1


def test_mint_wait_receives_the_lease_once_an_operator_approves(operator: Operator, canary: str):
    make_set(operator, canary)
    agent_token = make_agent(operator)
    operator.ok("grant", "create", "--agent", "billing-bot", "--set", SET, "--approval", "required")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env.update(KEYFOB_ADDR=operator.server.url, KEYFOB_TOKEN=agent_token)
    with subprocess.Popen(
        [sys.executable, "-m", "keyfob.cli.main", "lease", "mint", "--set", SET, "--wait", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as agent:
        try:
            deadline = time.monotonic() + 30
            while not (items := operator.json("lease", "requests")["items"]):
                assert time.monotonic() < deadline, "the lease request never arrived"
                time.sleep(0.2)
            operator.ok("lease", "approve", items[0]["id"])
            out, err = agent.communicate(timeout=60)
        finally:
            agent.kill()
    assert agent.returncode == 0, err
    lease = only_token(out, LEASE)
    assert out.count(lease) == 1
    assert canary not in out + err
    assert operator.ok("lease", "check", env={"KEYFOB_LEASE": lease}).stdout.startswith("allowed")
