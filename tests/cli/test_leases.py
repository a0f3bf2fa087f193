"""``keyfob lease …`` and ``keyfob me grants`` against a fake API."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import (
    AGENT_TOKEN,
    LEASE_TOKEN,
    OPERATOR_TOKEN,
    Cli,
    FakeKeyfob,
    agent_view,
    lease_view,
    problem,
    request_view,
)

AS_AGENT = {"KEYFOB_TOKEN": AGENT_TOKEN}
POLL = "/v1/me/lease-requests/r1a2b3c4d5e6f708"
MINT = ("lease", "mint", "--set", "openai/prod/default")


def minted(**overrides: object) -> dict[str, object]:
    return {**lease_view(**overrides), "token": LEASE_TOKEN, "ttl": 60}


# --- mint: which token, what is sent, the token printed once ----------------------------


def test_mint_with_an_operator_token_says_so_and_sends_nothing(cli: Cli, api: FakeKeyfob):
    result = cli(*MINT)

    assert result.exit_code == 1
    assert "needs an agent token (kfa_…)" in result.stderr
    assert "KEYFOB_TOKEN holds an operator token" in result.stderr
    assert OPERATOR_TOKEN not in result.output
    assert api.requests == []


def test_mint_without_a_token(cli: Cli, api: FakeKeyfob):
    result = cli(*MINT, env={"KEYFOB_TOKEN": ""})

    assert result.exit_code == 1
    assert "needs an agent token" in result.stderr
    assert api.requests == []


def test_mint_prints_the_lease_once(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases", minted(), status=201)

    result = cli(*MINT, env=AS_AGENT)

    assert result.exit_code == 0, result.output
    (request,) = api.requests
    assert request.headers["authorization"] == f"Bearer {AGENT_TOKEN}"
    assert json.loads(request.content) == {"secret_set": "openai/prod/default", "scope": "request"}
    assert result.stdout.count(LEASE_TOKEN) == 1
    assert LEASE_TOKEN in result.stdout.splitlines()
    assert "you will not see it again" in result.stdout
    assert "lease l1a2b3c4d5e6f708 on openai/prod/default: request, uses 0/1" in result.stdout


def test_mint_workflow_options_and_json(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases", minted(scope="workflow", max_uses=5), status=201)

    result = cli(
        *MINT, "--scope", "workflow", "--ttl", "300", "--max-uses", "5", "--json", env=AS_AGENT
    )

    assert api.bodies("POST", "/v1/leases") == [
        {"secret_set": "openai/prod/default", "scope": "workflow", "ttl": 300, "max_uses": 5}
    ]
    assert json.loads(result.stdout)["token"] == LEASE_TOKEN
    assert result.stdout.count(LEASE_TOKEN) == 1


def test_mint_count_prints_each_token_once(cli: Cli, api: FakeKeyfob):
    tokens = [LEASE_TOKEN[:-1] + c for c in "xyz"]
    leases = [{**minted(id=f"l1a2b3c4d5e6f70{i}"), "token": t} for i, t in enumerate(tokens)]
    api.on("POST", "/v1/leases", {"leases": leases}, status=201)

    result = cli(*MINT, "--count", "3", env=AS_AGENT)

    assert result.exit_code == 0, result.output
    assert api.bodies("POST", "/v1/leases") == [
        {"secret_set": "openai/prod/default", "scope": "request", "count": 3}
    ]
    lines = result.stdout.splitlines()
    assert lines[1:] == tokens
    assert "3 leases on openai/prod/default: request" in lines[0]
    assert "you will not see them again" in lines[0]


def test_mint_count_json_gives_the_list(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases", {"leases": [minted(), minted()]}, status=201)

    result = cli(*MINT, "--count", "2", "--json", env=AS_AGENT)

    assert result.exit_code == 0, result.output
    assert [lease["token"] for lease in json.loads(result.stdout)["leases"]] == [LEASE_TOKEN] * 2


@pytest.mark.parametrize("count", ["0", "101"])
def test_mint_count_out_of_range_sends_nothing(cli: Cli, api: FakeKeyfob, count: str):
    result = cli(*MINT, "--count", count, env=AS_AGENT)

    assert result.exit_code != 0
    assert api.requests == []


def test_a_denial_shows_the_reason(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        "/v1/leases",
        lambda _r: problem(
            403, "forbidden", "no usable grant for this agent and secret set", reason="not_granted"
        ),
    )

    result = cli(*MINT, env=AS_AGENT)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: no usable grant for this agent and secret set (reason: not_granted)\n"
    )


def test_rate_limited_says_when_to_retry(cli: Cli, api: FakeKeyfob):
    def limited(_request: httpx.Request) -> httpx.Response:
        response = problem(
            429, "rate-limited", "the grant's rate limit is reached", reason="rate_limited"
        )
        response.headers["Retry-After"] = "12"
        return response

    api.on("POST", "/v1/leases", limited)

    result = cli(*MINT, env=AS_AGENT)

    assert result.stderr == (
        "error: the grant's rate limit is reached; retry in 12 s (reason: rate_limited)\n"
    )


# --- approval: 202, --wait, poll ----------------------------------------------------------


def test_pending_without_wait_prints_the_request_id(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases", {**request_view(), "poll": POLL}, status=202)

    result = cli(*MINT, env=AS_AGENT)

    assert result.exit_code == 0, result.output
    assert "lease request r1a2b3c4d5e6f708 on openai/prod/default is waiting" in result.stdout
    assert "keyfob lease approve r1a2b3c4d5e6f708" in result.stdout
    assert api.calls("GET", POLL) == []


def test_wait_polls_until_issued_and_prints_the_lease_once(cli: Cli, api: FakeKeyfob):
    answers = iter(
        [
            request_view("pending"),
            request_view("issued", lease_id="l1a2b3c4d5e6f708", lease=minted()),
        ]
    )
    api.on("POST", "/v1/leases", {**request_view(), "poll": POLL}, status=202)
    api.on("GET", POLL, lambda _r: httpx.Response(200, json=next(answers)))

    result = cli(*MINT, "--wait", "120", env=AS_AGENT)

    assert result.exit_code == 0, result.output
    polls = api.calls("GET", POLL)
    assert [p.headers["authorization"] for p in polls] == [f"Bearer {AGENT_TOKEN}"] * 2
    assert [p.url.params["wait"] for p in polls] == ["20", "20"]
    assert result.stdout.count(LEASE_TOKEN) == 1


def test_wait_gives_up_after_the_time_given(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases", {**request_view(), "poll": POLL}, status=202)
    api.on("GET", POLL, request_view("pending"))

    result = cli(*MINT, "--wait", "45", env=AS_AGENT)

    assert result.exit_code == 1
    assert [p.url.params["wait"] for p in api.calls("GET", POLL)] == ["20", "20", "5"]
    assert "still waiting for an operator after 45 s" in result.stderr
    assert "keyfob lease poll r1a2b3c4d5e6f708" in result.stderr


@pytest.mark.parametrize("status", ["denied", "expired"])
def test_wait_ends_on_a_decision_other_than_issue(cli: Cli, api: FakeKeyfob, status: str):
    api.on("POST", "/v1/leases", {**request_view(), "poll": POLL}, status=202)
    api.on("GET", POLL, request_view(status))

    result = cli(*MINT, "--wait", "60", "--json", env=AS_AGENT)

    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == status
    assert result.stderr == (
        f"error: lease request r1a2b3c4d5e6f708 is {status}; no lease was issued\n"
    )
    assert len(api.calls("GET", POLL)) == 1


def test_poll_of_an_already_issued_request(cli: Cli, api: FakeKeyfob):
    api.on("GET", POLL, request_view("issued", lease_id="l1a2b3c4d5e6f708"))

    result = cli("lease", "poll", "r1a2b3c4d5e6f708", env=AS_AGENT)

    assert result.exit_code == 1
    assert "already issued as lease l1a2b3c4d5e6f708" in result.stderr
    assert api.calls("GET", POLL)[0].url.params["wait"] == "0"


# --- operator side ---------------------------------------------------------------------


def test_list_filters_and_table(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/v1/leases", {"items": [lease_view()]})
    api.on("GET", "/v1/agents", {"items": [agent_view()]})

    result = cli("lease", "list", "--agent", "billing-bot", "--set", "openai/prod/default", "--all")

    assert dict(api.calls("GET", "/v1/leases")[0].url.params) == {
        "agent": "billing-bot",
        "secret_set": "openai/prod/default",
        "all": "true",
    }
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "AGENT", "SET", "SCOPE", "USES", "STATUS", "EXPIRES"]
    assert lines[1].split() == [
        "l1a2b3c4d5e6f708", "billing-bot", "openai/prod/default", "request", "0/1",
        "active", "2026-11-24", "06:01:00",
    ]  # fmt: skip


def test_list_empty(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/v1/leases", {"items": []})

    assert cli("lease", "list").stdout == "no active leases\n"
    assert api.requests[0].url.params["all"] == "false"


def test_revoke_one(cli: Cli, api: FakeKeyfob):
    api.on("DELETE", "/v1/leases/l1a2b3c4d5e6f708", lease_view(status="revoked"))

    result = cli("lease", "revoke", "l1a2b3c4d5e6f708")

    assert result.stdout == "revoked lease l1a2b3c4d5e6f708 on openai/prod/default\n"


def test_revoke_in_bulk(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases/revoke", {"revoked": 2, "lease_ids": ["l1", "l2"]})

    result = cli("lease", "revoke", "--agent", "billing-bot", "--set", "openai/prod/default")

    assert api.bodies("POST", "/v1/leases/revoke") == [
        {"agent": "billing-bot", "secret_set": "openai/prod/default"}
    ]
    assert result.stdout == "revoked 2 leases (agent billing-bot, set openai/prod/default)\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name a lease ID"),
        (["l1", "--grant", "g1"], "not both"),
        ([LEASE_TOKEN], "that is a token"),
    ],
)
def test_revoke_refuses_unclear_requests(cli: Cli, api: FakeKeyfob, args: list[str], message: str):
    result = cli("lease", "revoke", *args)

    assert result.exit_code == 1
    assert message in result.stderr
    assert LEASE_TOKEN not in result.output
    assert api.requests == []


def test_requests_table_names_the_agent(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/v1/lease-requests", {"items": [request_view()]})
    api.on("GET", "/v1/agents", {"items": [agent_view()]})

    result = cli("lease", "requests")

    assert api.calls("GET", "/v1/lease-requests")[0].url.params["status"] == "pending"
    lines = result.stdout.splitlines()
    assert lines[1].split()[:6] == [
        "r1a2b3c4d5e6f708", "billing-bot", "openai/prod/default", "request", "60", "s",
    ]  # fmt: skip


def test_requests_all_asks_for_every_status(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/v1/lease-requests", {"items": []})

    assert cli("lease", "requests", "--status", "all").stdout == "no lease requests\n"
    assert api.requests[0].url.params["status"] == ""
    assert cli("lease", "requests", "--status", "denied").stdout == "no denied lease requests\n"


@pytest.mark.parametrize(("verb", "word"), [("approve", "approved"), ("deny", "denied")])
def test_approve_and_deny(cli: Cli, api: FakeKeyfob, verb: str, word: str):
    url = f"/v1/lease-requests/r1a2b3c4d5e6f708/{verb}"
    api.on("POST", url, request_view(word))

    result = cli("lease", verb, "r1a2b3c4d5e6f708")

    assert result.stdout.startswith(f"{word} lease request r1a2b3c4d5e6f708 on openai/prod/default")
    assert len(api.calls("POST", url)) == 1
    assert json.loads(cli("lease", verb, "r1a2b3c4d5e6f708", "--json").stdout)["status"] == word


def test_approving_a_decided_request_is_a_conflict(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        "/v1/lease-requests/r1/approve",
        lambda _r: problem(409, "conflict", "lease request r1 is denied"),
    )

    result = cli("lease", "approve", "r1")

    assert result.stderr == "error: lease request r1 is denied (HTTP 409 conflict)\n"


# --- check: the lease from KEYFOB_LEASE or stdin ---------------------------------------------


def check_answer(allowed: bool, reason: str | None = None) -> dict[str, object]:
    return {"allowed": allowed, "reason": reason, "lease": lease_view()}


def test_check_with_the_lease_from_the_environment(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases/check", check_answer(True))

    result = cli(
        "lease", "check", "--method", "post", "--path", "/v1/chat/completions",
        env={"KEYFOB_LEASE": LEASE_TOKEN, "KEYFOB_TOKEN": ""},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (request,) = api.requests
    assert request.headers["authorization"] == f"Bearer {LEASE_TOKEN}"
    assert json.loads(request.content) == {
        "action": "proxy",
        "method": "POST",
        "path": "/v1/chat/completions",
    }
    assert result.stdout.splitlines()[0] == "allowed"
    assert LEASE_TOKEN not in result.output


def test_check_reads_the_lease_from_stdin_and_exits_1_when_denied(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases/check", check_answer(False, "action_not_allowed"))

    result = cli(
        "lease", "check", "--action", "export", "--set", "openai/prod/default",
        input=LEASE_TOKEN + "\n",
    )  # fmt: skip

    assert result.exit_code == 1
    assert api.requests[0].headers["authorization"] == f"Bearer {LEASE_TOKEN}"
    assert json.loads(api.requests[0].content) == {
        "action": "export",
        "secret_set": "openai/prod/default",
    }
    assert result.stdout.splitlines()[0] == "denied (reason: action_not_allowed)"
    assert LEASE_TOKEN not in result.output


def test_check_json(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases/check", check_answer(True))

    result = cli("lease", "check", "--json", env={"KEYFOB_LEASE": LEASE_TOKEN})

    assert json.loads(result.stdout) == check_answer(True)


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
    cli: Cli, api: FakeKeyfob, lease: str, message: str
):
    result = cli("lease", "check", input=lease + "\n", env={"KEYFOB_TOKEN": ""})

    assert result.exit_code == 1
    assert message in result.stderr
    assert (lease or "-") not in result.output
    assert api.requests == []


def test_an_unknown_lease_points_at_keyfob_lease(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases/check", lambda _r: problem(401, "unauthorized", "unauthorized"))

    result = cli("lease", "check", env={"KEYFOB_LEASE": LEASE_TOKEN})

    assert result.stderr == (
        "error: unauthorized; check KEYFOB_LEASE or the lease on stdin (HTTP 401 unauthorized)\n"
    )


def test_the_lease_prompt_on_a_terminal_is_hidden_and_on_stderr(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/leases/check", check_answer(True))

    result = cli("lease", "check", input=LEASE_TOKEN + "\n", tty=True)

    assert result.exit_code == 0, result.output
    assert "Lease (hidden)" in result.stderr
    assert LEASE_TOKEN not in result.output


# --- me grants --------------------------------------------------------------------------


def test_me_grants(cli: Cli, api: FakeKeyfob):
    item = {
        "grant_id": "g1a2b3c4d5e6f708",
        "secret_set": "openai/prod/default",
        "keys": ["OPENAI_API_KEY"],
        "actions": ["proxy"],
        "scopes": ["request"],
        "approval": "none",
        "max_lease_ttl": 900,
        "uses": 2,
        "max_uses": None,
        "expires_at": None,
    }
    api.on("GET", "/v1/me/grants", {"agent": "billing-bot", "items": [item]})

    result = cli("me", "grants", env=AS_AGENT)

    assert api.requests[0].headers["authorization"] == f"Bearer {AGENT_TOKEN}"
    lines = result.stdout.splitlines()
    assert lines[0] == "agent billing-bot"
    assert lines[2].split() == [
        "g1a2b3c4d5e6f708", "openai/prod/default", "OPENAI_API_KEY", "proxy", "request",
        "none", "900", "s", "2/-", "-",
    ]  # fmt: skip
    assert json.loads(cli("me", "grants", "--json", env=AS_AGENT).stdout)["items"] == [item]


def test_me_grants_needs_an_agent_token(cli: Cli, api: FakeKeyfob):
    result = cli("me", "grants")

    assert result.exit_code == 1
    assert "`keyfob me grants` needs an agent token" in result.stderr
    assert api.requests == []
