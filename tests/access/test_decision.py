"""The one lease-use decision (``vault.decision.decide``) as a pure function: every refusal
reason from one allowed case, and the use-count and rate rules under Hypothesis."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyfob.clock import isoformat
from keyfob.store.records import AgentRow, GrantRow, LeaseRow
from keyfob.vault.decision import (
    Allow,
    Counts,
    Deny,
    Now,
    Target,
    Use,
    decide,
    mint_refusal,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # a minute boundary


def at(seconds: float) -> str:
    return isoformat(T0 + timedelta(seconds=seconds))


AGENT = AgentRow("a1", "bot", None, at(-3600), "operator:x", at(-3600))
GRANT = GrantRow(
    id="g1",
    agent_id="a1",
    set_id="s1",
    set_path="openai/prod/default",
    keys=None,
    actions=["proxy", "export"],
    not_before=None,
    expires_at=None,
    scopes=["request", "workflow"],
    max_lease_ttl=900,
    max_lease_uses=None,
    rate_limit=None,
    max_uses=None,
    uses=0,
    rate_window=0,
    rate_count=0,
    methods=None,
    paths=None,
    approval="none",
    created_at=at(-3600),
    created_by="operator:x",
    updated_at=at(-3600),
    revoked_at=None,
)
LEASE = LeaseRow(
    id="l1",
    agent_id="a1",
    grant_id="g1",
    set_id="s1",
    set_path="openai/prod/default",
    actions=["proxy", "export"],
    keys=None,
    scope="workflow",
    max_uses=None,
    uses=0,
    created_at=at(-10),
    expires_at=at(890),
    revoked_at=None,
    revoke_reason=None,
)
SET = Target(deleted=False, injectable=True)
PROXY = Use("proxy", "openai/prod/default", "POST", "/v1/chat/completions", ("API_KEY",))


def verdict(
    *,
    lease: dict[str, Any] | None = None,
    grant: dict[str, Any] | None = None,
    agent: AgentRow | None = AGENT,
    target: Target | None = SET,
    use: Use = PROXY,
    now: float = 0,
) -> Allow | Deny:
    g = replace(GRANT, **(grant or {}))
    return decide(
        replace(LEASE, **(lease or {})), g, agent, target, use, Now(T0 + timedelta(0, now))
    )


def test_the_base_case_is_allowed_and_counts_one_use() -> None:
    allowed = verdict()
    assert isinstance(allowed, Allow)
    assert allowed.counts == Counts(1, 1, T0.timestamp() // 60, 1)


# Each refusal reason, from the allowed base case with one thing changed.
REFUSALS = [
    ("not_granted", {"use": replace(PROXY, set_path="stripe/prod/billing")}),
    ("revoked", {"lease": {"revoked_at": at(-1)}}),
    ("revoked", {"grant": {"revoked_at": at(-1)}}),
    ("revoked", {"target": Target(deleted=True, injectable=True)}),
    ("revoked", {"target": None}),
    ("agent_disabled", {"agent": replace(AGENT, disabled_at=at(-1))}),
    ("agent_disabled", {"agent": None}),
    ("expired", {"lease": {"expires_at": at(0)}}),
    ("expired", {"grant": {"expires_at": at(0)}}),
    # The grant's TTL lowered below the lease's age: the lease has lived long enough.
    ("expired", {"grant": {"max_lease_ttl": 10}}),
    ("not_yet_valid", {"grant": {"not_before": at(1)}}),
    ("exhausted", {"lease": {"max_uses": 3, "uses": 3}}),
    # The grant's lease use cap lowered below what the lease has used.
    ("exhausted", {"lease": {"max_uses": 10, "uses": 2}, "grant": {"max_lease_uses": 2}}),
    ("exhausted", {"grant": {"max_uses": 5, "uses": 5}}),
    ("scope_not_allowed", {"grant": {"scopes": ["request"]}}),
    ("action_not_allowed", {"grant": {"actions": ["export"]}}),
    ("action_not_allowed", {"lease": {"actions": ["export"]}}),
    ("key_not_allowed", {"grant": {"keys": ["OTHER_KEY"]}}),
    ("method_not_allowed", {"grant": {"methods": ["GET"]}}),
    ("path_not_allowed", {"grant": {"paths": ["/v1/models"]}}),
    ("no_profile", {"target": Target(deleted=False, injectable=False)}),
    (
        "rate_limited",
        {"grant": {"rate_limit": 2, "rate_window": T0.timestamp() // 60, "rate_count": 2}},
    ),
]


@pytest.mark.parametrize(("reason", "change"), REFUSALS, ids=[r for r, _ in REFUSALS])
def test_each_refusal(reason: str, change: dict[str, Any]) -> None:
    refused = verdict(**change)
    assert isinstance(refused, Deny)
    assert refused.reason == reason


def test_a_rate_refusal_says_when_the_window_ends() -> None:
    minute = int(T0.timestamp()) // 60
    refused = verdict(grant={"rate_limit": 1, "rate_window": minute, "rate_count": 1}, now=17)
    assert refused == Deny("rate_limited", 43)


def test_export_needs_no_profile_and_keys_are_narrowed_by_the_grant() -> None:
    export = Use("export", "openai/prod/default", keys=("API_KEY",))
    allowed = verdict(
        use=export,
        target=Target(deleted=False, injectable=False),
        grant={"keys": ["API_KEY", "ORG"]},
        lease={"keys": ["API_KEY"]},
    )
    assert isinstance(allowed, Allow)
    assert allowed.keys == ["API_KEY"]


@given(uses=st.integers(0, 50), cap=st.one_of(st.none(), st.integers(1, 50)))
def test_the_use_count_rule(uses: int, cap: int | None) -> None:
    """A cap of n allows exactly the uses 0..n-1, for the lease and the grant alike."""
    on_lease = verdict(lease={"uses": uses, "max_uses": cap})
    on_grant = verdict(grant={"uses": uses, "max_uses": cap})
    expected = cap is None or uses < cap
    assert isinstance(on_lease, Allow) is expected
    assert isinstance(on_grant, Allow) is expected


@given(
    limit=st.integers(1, 10),
    offsets=st.lists(st.floats(0, 179.999, allow_nan=False), min_size=1, max_size=40),
)
def test_the_rate_rule_over_a_run_of_uses(limit: int, offsets: list[float]) -> None:
    """Fed its own counters back, decide allows at most ``limit`` uses per epoch minute and
    refuses none while a minute has room."""
    counts = Counts(0, 0, 0, 0)
    per_minute: dict[int, int] = {}
    for offset in sorted(offsets):
        now = Now(T0 + timedelta(seconds=offset))
        grant = replace(GRANT, rate_limit=limit)
        result = decide(LEASE, grant, AGENT, SET, PROXY, now, counts)
        minute = now.second // 60
        if isinstance(result, Allow):
            per_minute[minute] = per_minute.get(minute, 0) + 1
            counts = result.counts
        else:
            assert result.reason == "rate_limited"
            assert per_minute.get(minute, 0) == limit
    assert all(n <= limit for n in per_minute.values())


def test_a_window_never_moves_back() -> None:
    """A node whose clock lags counts into the newer window instead of resetting it."""
    minute = int(T0.timestamp()) // 60
    counts = Counts(0, 5, minute + 1, 1)
    allowed = decide(LEASE, replace(GRANT, rate_limit=2), AGENT, SET, PROXY, Now(T0), counts)
    assert isinstance(allowed, Allow)
    assert allowed.counts == Counts(1, 6, minute + 1, 2)
    refused = decide(
        LEASE, replace(GRANT, rate_limit=2), AGENT, SET, PROXY, Now(T0), allowed.counts
    )
    assert isinstance(refused, Deny)


def test_mint_refusals_share_the_grant_rules() -> None:
    now = Now(T0)
    assert mint_refusal(GRANT, "request", now) is None
    assert mint_refusal(None, "request", now) == "not_granted"
    assert mint_refusal(replace(GRANT, revoked_at=at(-1)), "request", now) == "not_granted"
    assert mint_refusal(replace(GRANT, not_before=at(1)), "request", now) == "not_yet_valid"
    assert mint_refusal(replace(GRANT, expires_at=at(0)), "request", now) == "expired"
    assert mint_refusal(replace(GRANT, scopes=["request"]), "workflow", now) == "scope_not_allowed"
    assert mint_refusal(replace(GRANT, max_uses=1, uses=1), "request", now) == "exhausted"
