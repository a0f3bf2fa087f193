"""``keyfob lease …`` and ``keyfob me grants`` against the real app in-process."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyfob.clock import FrozenClock

from .conftest import AGENT_TOKEN, LEASE_TOKEN, OPERATOR_TOKEN, Cli, RealKeyfob

MINT = ("lease", "mint", "--set", "openai/prod/default")
SET = "openai/prod/default"


@dataclass
class World:
    """An agent ``billing-bot`` with its token, and the set ``openai/prod/default``."""

    agent: dict[str, Any]
    token: str

    @property
    def env(self) -> dict[str, str]:
        return {"KEYFOB_TOKEN": self.token}


def call(real: RealKeyfob, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    """An API call (as the operator unless ``token`` is given) that must succeed."""
    with real.http() as http:
        if token is not None:
            http.headers["Authorization"] = f"Bearer {token}"
        answer = http.request(method, path, **kwargs)
    assert answer.status_code < 300, answer.text
    return answer.json()


def refused(real: RealKeyfob, method: str, path: str, token: str, **kwargs: Any) -> Any:
    """The same call's refusal, as the API sends it."""
    with real.http() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        answer = http.request(method, path, **kwargs)
    assert answer.status_code >= 400, answer.text
    return answer


@pytest.fixture
def world(real: RealKeyfob) -> World:
    created = call(real, "POST", "/v1/agents", json={"name": "billing-bot"})
    body = {
        "provider": "openai",
        "environment": "prod",
        "name": "default",
        "entries": {"OPENAI_API_KEY": "sk-" + "v" * 24},
        "profile": {"preset": "openai"},
    }
    call(real, "POST", "/v1/secret-sets", json=body)
    real.requests.clear()
    return World({k: v for k, v in created.items() if k != "token"}, created["token"])


def grant(real: RealKeyfob, **spec: Any) -> dict[str, Any]:
    view: dict[str, Any] = call(
        real, "POST", "/v1/grants", json={"agent": "billing-bot", "secret_set": SET, **spec}
    )
    return view


def mint(real: RealKeyfob, world: World, **body: Any) -> dict[str, Any]:
    """A lease (or a pending request) minted through the API as the agent."""
    answer: dict[str, Any] = call(
        real, "POST", "/v1/leases", world.token, json={"secret_set": SET, **body}
    )
    return answer


def leases(real: RealKeyfob) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = call(real, "GET", "/v1/leases", params={"all": "true"})["items"]
    return items


def lease_requests(real: RealKeyfob) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = call(real, "GET", "/v1/lease-requests", params={"status": ""})[
        "items"
    ]
    return items


def polls(real: RealKeyfob, request_id: str) -> list[Any]:
    return real.calls("GET", f"/v1/me/lease-requests/{request_id}")


def tokens(text: str) -> list[str]:
    return re.findall(r"kfl_[A-Za-z0-9_-]+", text)


# --- mint: which token, what is sent, the token printed once ----------------------------


def test_mint_with_an_operator_token_says_so_and_sends_nothing(real_cli: Cli, real: RealKeyfob):
    result = real_cli(*MINT, env={"KEYFOB_TOKEN": OPERATOR_TOKEN})

    assert result.exit_code == 1
    assert "needs an agent token (kfa_…)" in result.stderr
    assert "KEYFOB_TOKEN holds an operator token" in result.stderr
    assert OPERATOR_TOKEN not in result.output
    assert real.requests == []


def test_mint_without_a_token(real_cli: Cli, real: RealKeyfob):
    result = real_cli(*MINT, env={"KEYFOB_TOKEN": ""})

    assert result.exit_code == 1
    assert "needs an agent token" in result.stderr
    assert real.requests == []


def test_mint_prints_the_lease_once(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real)
    real.requests.clear()

    result = real_cli(*MINT, env=world.env)

    assert result.exit_code == 0, result.output
    (request,) = real.requests
    assert request.headers["authorization"] == f"Bearer {world.token}"
    (lease,) = leases(real)
    (token,) = set(tokens(result.stdout))
    assert result.stdout.count(token) == 1
    assert token in result.stdout.splitlines()
    assert "you will not see it again" in result.stdout
    assert f"lease {lease['id']} on {SET}: request, uses 0/1" in result.stdout
    # The printed token is the lease's: the server accepts it.
    assert call(real, "POST", "/v1/leases/check", token, json={"action": "proxy"})["allowed"]


def test_mint_workflow_options_and_json(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real, scopes=["request", "workflow"], max_lease_uses=10)

    result = real_cli(
        *MINT, "--scope", "workflow", "--ttl", "300", "--max-uses", "5", "--json", env=world.env
    )

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["token"].startswith("kfl_")
    assert result.stdout.count(shown["token"]) == 1
    (lease,) = leases(real)
    assert (lease["scope"], lease["max_uses"]) == ("workflow", 5)
    created = datetime.fromisoformat(lease["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(lease["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - created - timedelta(seconds=300)) < timedelta(seconds=1)
    assert {k: v for k, v in shown.items() if k in lease} == lease


def test_mint_count_prints_each_token_once(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real)
    result = real_cli(*MINT, "--count", "3", env=world.env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    printed = lines[1:]
    assert len(printed) == len(set(printed)) == 3
    assert all(token.startswith("kfl_") for token in printed)
    assert "3 leases on openai/prod/default: request" in lines[0]
    assert "you will not see them again" in lines[0]
    assert len(leases(real)) == 3
    for token in printed:  # each printed token is a live lease of its own
        assert call(real, "POST", "/v1/leases/check", token, json={"action": "proxy"})["allowed"]


def test_mint_count_json_gives_the_list(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real)
    result = real_cli(*MINT, "--count", "2", "--json", env=world.env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["leases"]
    assert sorted(lease["id"] for lease in shown) == sorted(lease["id"] for lease in leases(real))
    assert len({lease["token"] for lease in shown}) == 2


@pytest.mark.parametrize("count", ["0", "101"])
def test_mint_count_out_of_range_sends_nothing(
    real_cli: Cli, real: RealKeyfob, world: World, count: str
):
    grant(real)
    real.requests.clear()
    result = real_cli(*MINT, "--count", count, env=world.env)
    assert result.exit_code != 0
    assert real.requests == []
    assert leases(real) == []


def test_a_denial_shows_the_reason(real_cli: Cli, real: RealKeyfob, world: World):
    # No grant at all.
    answer = refused(real, "POST", "/v1/leases", world.token, json={"secret_set": SET})

    result = real_cli(*MINT, env=world.env)

    assert result.exit_code == 1
    problem = answer.json()
    assert problem["reason"] == "not_granted"
    assert result.stderr == f"error: {problem['detail']} (reason: not_granted)\n"
    assert leases(real) == []


def test_rate_limited_says_when_to_retry(
    real_cli: Cli, real: RealKeyfob, world: World, monkeypatch: pytest.MonkeyPatch
):
    # Minting is not rate-limited by the grant's rate_limit (uses are: see test_export); the
    # 429 a mint can get is too many requests waiting for approval.
    monkeypatch.setattr(real.vault.leases, "_max_pending", 1)
    grant(real, approval="required")
    mint(real, world)
    answer = refused(real, "POST", "/v1/leases", world.token, json={"secret_set": SET})
    assert answer.status_code == 429

    result = real_cli(*MINT, env=world.env)

    assert result.exit_code == 1
    retry = answer.headers.get("retry-after")
    hint = f"; retry in {retry} s" if retry else ""
    problem = answer.json()
    assert problem["reason"] == "too_many_pending"
    assert result.stderr == f"error: {problem['detail']}{hint} (reason: too_many_pending)\n"
    assert len(lease_requests(real)) == 1


# --- approval: 202, --wait, poll ----------------------------------------------------------


def test_pending_without_wait_prints_the_request_id(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real, approval="required")

    result = real_cli(*MINT, env=world.env)

    assert result.exit_code == 0, result.output
    (pending,) = lease_requests(real)
    assert pending["status"] == "pending"
    assert f"lease request {pending['id']} on {SET} is waiting" in result.stdout
    assert f"keyfob lease approve {pending['id']}" in result.stdout
    assert polls(real, pending["id"]) == []
    assert leases(real) == []


def approve_when_asked(real: RealKeyfob) -> threading.Thread:
    """An operator who approves the first pending request as soon as there is one."""

    def approve() -> None:
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while datetime.now(UTC) < deadline:
            pending = [r for r in lease_requests(real) if r["status"] == "pending"]
            if pending:
                call(real, "POST", f"/v1/lease-requests/{pending[0]['id']}/approve")
                return
            threading.Event().wait(0.05)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    return thread


def test_wait_polls_until_issued_and_prints_the_lease_once(
    real_cli: Cli, real: RealKeyfob, world: World
):
    grant(real, approval="required")
    operator = approve_when_asked(real)

    result = real_cli(*MINT, "--wait", "120", env=world.env)
    operator.join(timeout=30)

    assert result.exit_code == 0, result.output
    (done,) = lease_requests(real)
    assert done["status"] == "issued"
    sent = polls(real, done["id"])
    assert sent
    assert {p.headers["authorization"] for p in sent} == {f"Bearer {world.token}"}
    assert {p.url.params["wait"] for p in sent} == {"20"}
    (token,) = set(tokens(result.stdout))
    assert result.stdout.count(token) == 1
    (lease,) = leases(real)
    assert lease["id"] == done["lease_id"]


def test_wait_gives_up_after_the_time_given(
    real_cli: Cli, real: RealKeyfob, world: World, monkeypatch: pytest.MonkeyPatch
):
    # The server holds each poll for real seconds; cut its hold to nothing so this test
    # does not sit for 45 s. What the CLI asks for (the wait= slices) is unchanged.
    monkeypatch.setattr("keyfob.vault.approvals.MAX_WAIT", 0)
    grant(real, approval="required")

    result = real_cli(*MINT, "--wait", "45", env=world.env)

    assert result.exit_code == 1
    (pending,) = lease_requests(real)
    assert pending["status"] == "pending"
    assert [p.url.params["wait"] for p in polls(real, pending["id"])] == ["20", "20", "5"]
    assert "still waiting for an operator after 45 s" in result.stderr
    assert f"keyfob lease poll {pending['id']}" in result.stderr


@pytest.mark.parametrize("status", ["denied", "expired"])
def test_wait_ends_on_a_decision_other_than_issue(
    real_cli: Cli, real: RealKeyfob, world: World, status: str
):
    grant(real, approval="required")
    pending = mint(real, world)
    if status == "denied":
        call(real, "POST", f"/v1/lease-requests/{pending['id']}/deny")
    else:  # the vault's clock moves past the request's expiry
        real.vault.core.clock = FrozenClock(datetime.now(UTC) + timedelta(days=1))

    result = real_cli("lease", "poll", pending["id"], "--wait", "60", "--json", env=world.env)

    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == status
    assert (
        result.stderr == f"error: lease request {pending['id']} is {status}; no lease was issued\n"
    )
    assert len(polls(real, pending["id"])) == 1
    assert leases(real) == []


def test_poll_of_an_already_issued_request(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real, approval="required")
    pending = mint(real, world)
    call(real, "POST", f"/v1/lease-requests/{pending['id']}/approve")
    call(real, "GET", f"/v1/me/lease-requests/{pending['id']}", world.token)  # issues it
    (lease,) = leases(real)
    real.requests.clear()

    result = real_cli("lease", "poll", pending["id"], env=world.env)

    assert result.exit_code == 1
    assert f"already issued as lease {lease['id']}" in result.stderr
    assert polls(real, pending["id"])[0].url.params["wait"] == "0"
    assert not tokens(result.output)


# --- operator side ---------------------------------------------------------------------


def test_list_filters_and_table(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real)
    mint(real, world)
    other = call(real, "POST", "/v1/agents", json={"name": "other-bot"})
    call(real, "POST", "/v1/grants", json={"agent": "other-bot", "secret_set": SET})
    mint(real, World(other, other["token"]))
    (lease,) = [item for item in leases(real) if item["agent_id"] == world.agent["id"]]

    result = real_cli("lease", "list", "--agent", "billing-bot", "--set", SET, "--all")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "AGENT", "SET", "SCOPE", "USES", "STATUS", "EXPIRES"]
    ends = lease["expires_at"]
    assert [line.split() for line in lines[1:]] == [[
        lease["id"], "billing-bot", SET, "request", "0/1", "active", ends[:10], ends[11:19],
    ]]  # fmt: skip


def test_list_empty(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real)
    lease = mint(real, world)
    call(real, "DELETE", f"/v1/leases/{lease['id']}")
    real.requests.clear()

    assert real_cli("lease", "list").stdout == "no active leases\n"
    assert real.requests[0].url.params["all"] == "false"
    assert real_cli("lease", "list", "--all").stdout.splitlines()[1].split()[0] == lease["id"]


def test_revoke_one(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real)
    lease = mint(real, world)

    result = real_cli("lease", "revoke", lease["id"])

    assert result.stdout == f"revoked lease {lease['id']} on {SET}\n"
    assert [item["status"] for item in leases(real)] == ["revoked"]


def test_revoke_in_bulk(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real)
    mint(real, world)
    mint(real, world)
    other = call(real, "POST", "/v1/agents", json={"name": "other-bot"})
    call(real, "POST", "/v1/grants", json={"agent": "other-bot", "secret_set": SET})
    kept = mint(real, World(other, other["token"]))

    result = real_cli("lease", "revoke", "--agent", "billing-bot", "--set", SET)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"revoked 2 leases (agent billing-bot, set {SET})\n"
    status = {item["id"]: item["status"] for item in leases(real)}
    assert status.pop(kept["id"]) == "active"
    assert set(status.values()) == {"revoked"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name a lease ID"),
        (["l1", "--grant", "g1"], "not both"),
        ([LEASE_TOKEN], "that is a token"),
    ],
)
def test_revoke_refuses_unclear_requests(
    real_cli: Cli, real: RealKeyfob, args: list[str], message: str
):
    result = real_cli("lease", "revoke", *args)

    assert result.exit_code == 1
    assert message in result.stderr
    assert LEASE_TOKEN not in result.output
    assert real.requests == []


def test_requests_table_names_the_agent(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real, approval="required")
    pending = mint(real, world, ttl=60)
    real.requests.clear()

    result = real_cli("lease", "requests")

    assert real.calls("GET", "/v1/lease-requests")[0].url.params["status"] == "pending"
    lines = result.stdout.splitlines()
    assert lines[1].split()[:6] == [pending["id"], "billing-bot", SET, "request", "60", "s"]


def test_requests_all_asks_for_every_status(real_cli: Cli, real: RealKeyfob, world: World):
    assert real_cli("lease", "requests", "--status", "all").stdout == "no lease requests\n"
    assert real.requests[0].url.params["status"] == ""
    grant(real, approval="required")
    pending = mint(real, world)
    call(real, "POST", f"/v1/lease-requests/{pending['id']}/deny")

    assert real_cli("lease", "requests").stdout == "no pending lease requests\n"
    (row,) = real_cli("lease", "requests", "--status", "all").stdout.splitlines()[1:]
    assert row.split()[0] == pending["id"]
    assert real_cli("lease", "requests", "--status", "approved").stdout == (
        "no approved lease requests\n"
    )


@pytest.mark.parametrize(("verb", "word"), [("approve", "approved"), ("deny", "denied")])
def test_approve_and_deny(real_cli: Cli, real: RealKeyfob, world: World, verb: str, word: str):
    grant(real, approval="required")
    first = mint(real, world)
    second = mint(real, world)

    result = real_cli("lease", verb, first["id"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{word} lease request {first['id']} on {SET}")
    assert len(real.calls("POST", f"/v1/lease-requests/{first['id']}/{verb}")) == 1
    shown = json.loads(real_cli("lease", verb, second["id"], "--json").stdout)
    assert shown["status"] == word
    assert {r["id"]: r["status"] for r in lease_requests(real)} == {
        first["id"]: word,
        second["id"]: word,
    }


def test_approving_a_decided_request_is_a_conflict(real_cli: Cli, real: RealKeyfob, world: World):
    grant(real, approval="required")
    pending = mint(real, world)
    call(real, "POST", f"/v1/lease-requests/{pending['id']}/deny")
    detail = refused(
        real, "POST", f"/v1/lease-requests/{pending['id']}/approve", real.operator_token
    ).json()["detail"]

    result = real_cli("lease", "approve", pending["id"])

    assert result.exit_code == 1
    assert result.stderr == f"error: {detail} (HTTP 409 conflict)\n"
    assert [r["status"] for r in lease_requests(real)] == ["denied"]


# --- check: the lease from KEYFOB_LEASE or stdin ---------------------------------------------


@pytest.fixture
def lease_token(real: RealKeyfob, world: World) -> str:
    """A live lease on a grant that allows POST /v1/chat/* by proxy only."""
    grant(real, methods=["POST"], paths=["/v1/chat/*"])
    token: str = mint(real, world)["token"]
    real.requests.clear()
    return token


def test_check_with_the_lease_from_the_environment(
    real_cli: Cli, real: RealKeyfob, lease_token: str
):
    result = real_cli(
        "lease", "check", "--method", "post", "--path", "/v1/chat/completions",
        env={"KEYFOB_LEASE": lease_token, "KEYFOB_TOKEN": ""},
    )  # fmt: skip
    wrong_path = real_cli(
        "lease", "check", "--method", "post", "--path", "/v1/models",
        env={"KEYFOB_LEASE": lease_token, "KEYFOB_TOKEN": ""},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    request = real.requests[0]
    assert request.headers["authorization"] == f"Bearer {lease_token}"
    assert result.stdout.splitlines()[0] == "allowed"
    assert wrong_path.exit_code == 1
    assert wrong_path.stdout.startswith("denied (reason: ")
    assert lease_token not in result.output + wrong_path.output


def test_check_reads_the_lease_from_stdin_and_exits_1_when_denied(
    real_cli: Cli, real: RealKeyfob, lease_token: str
):
    result = real_cli(
        "lease", "check", "--action", "export", "--set", SET, input=lease_token + "\n"
    )

    assert result.exit_code == 1
    assert real.requests[0].headers["authorization"] == f"Bearer {lease_token}"
    answer = call(
        real, "POST", "/v1/leases/check", lease_token, json={"action": "export", "secret_set": SET}
    )
    assert answer["allowed"] is False
    assert result.stdout.splitlines()[0] == f"denied (reason: {answer['reason']})"
    assert lease_token not in result.output


def test_check_json(real_cli: Cli, real: RealKeyfob, lease_token: str):
    result = real_cli("lease", "check", "--json", env={"KEYFOB_LEASE": lease_token})

    assert json.loads(result.stdout) == call(
        real, "POST", "/v1/leases/check", lease_token, json={"action": "proxy"}
    )
    assert lease_token not in result.stdout


@pytest.mark.parametrize(
    ("lease", "message"),
    [
        ("", "no lease"),
        (AGENT_TOKEN, "holds an agent token, not a lease"),
        (OPERATOR_TOKEN, "holds an operator token, not a lease"),
        ("kfl_short", "holds something else, not a lease"),
    ],
)
def test_check_refuses_what_is_not_a_lease_without_sending_it(
    real_cli: Cli, real: RealKeyfob, lease: str, message: str
):
    result = real_cli("lease", "check", input=lease + "\n", env={"KEYFOB_TOKEN": ""})

    assert result.exit_code == 1
    assert message in result.stderr
    assert (lease or "-") not in result.output
    assert real.requests == []


def test_an_unknown_lease_points_at_keyfob_lease(real_cli: Cli, real: RealKeyfob):
    detail = refused(
        real, "POST", "/v1/leases/check", LEASE_TOKEN, json={"action": "proxy"}
    ).json()["detail"]

    result = real_cli("lease", "check", env={"KEYFOB_LEASE": LEASE_TOKEN})

    assert result.stderr == (
        f"error: {detail}; check KEYFOB_LEASE or the lease on stdin (HTTP 401 unauthorized)\n"
    )


def test_the_lease_prompt_on_a_terminal_is_hidden_and_on_stderr(
    real_cli: Cli, real: RealKeyfob, lease_token: str
):
    result = real_cli("lease", "check", input=lease_token + "\n", tty=True)

    assert result.exit_code == 0, result.output
    assert "Lease (hidden)" in result.stderr
    assert lease_token not in result.output


# --- me grants --------------------------------------------------------------------------


def test_me_grants(real_cli: Cli, real: RealKeyfob, world: World):
    made = grant(real, keys=["OPENAI_API_KEY"], max_uses=50)
    real.requests.clear()

    result = real_cli("me", "grants", env=world.env)

    assert result.exit_code == 0, result.output
    assert real.requests[0].headers["authorization"] == f"Bearer {world.token}"
    lines = result.stdout.splitlines()
    assert lines[0] == "agent billing-bot"
    assert lines[2].split() == [
        made["id"], SET, "OPENAI_API_KEY", "proxy", "request", "none", "900", "s", "0/50", "-",
    ]  # fmt: skip
    assert json.loads(real_cli("me", "grants", "--json", env=world.env).stdout) == call(
        real, "GET", "/v1/me/grants", world.token
    )


def test_me_grants_needs_an_agent_token(real_cli: Cli, real: RealKeyfob):
    result = real_cli("me", "grants")

    assert result.exit_code == 1
    assert "`keyfob me grants` needs an agent token" in result.stderr
    assert real.requests == []
