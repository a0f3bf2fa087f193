"""Secret sets through the vault: versions, fingerprints, rollback, delete/restore/purge, limits."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from sqlalchemy import event

from keyfob.errors import Conflict, NotFound, ValidationFailed
from keyfob.profiles import Profile, all_presets, check_key_name
from keyfob.profiles.registry import Preset
from keyfob.vault import Context, Vault
from keyfob.vault.views import Purged
from tests.conftest import CANARY
from tests.support.oauth_server import rsa_pem

from .conftest import create_set, snapshot, version_count

PATH = "openai/prod/default"
OPENAI = {"preset": "openai"}


def keys_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k.name: k for k in view.keys}


async def values(vault: Vault, path: str = PATH, version: int | None = None) -> dict[str, str]:
    return {k: v.reveal() for k, v in (await vault.sets.reveal(path, version)).items()}


async def listed(vault: Vault, **filters: Any) -> list[str]:
    items, _ = await vault.sets.search(**filters)
    return [item.path for item in items]


@pytest.fixture
async def existing(vault: Vault, ctx: Context) -> dict[str, Any]:
    """openai/prod/default with the openai preset, at version 1."""
    return await create_set(vault, ctx, profile=OPENAI, labels={"team": "core"})


# -- versions -----------------------------------------------------------------------------


async def test_create_makes_version_one_and_shows_no_value(vault: Vault, ctx: Context):
    view = await create_set(vault, ctx, entries={"OPENAI_API_KEY": CANARY, "ORG_ID": "org-1"})

    assert view.version == 1
    assert view.path == PATH
    assert [(k.name, k.version) for k in view.keys] == [
        ("OPENAI_API_KEY", 1),
        ("ORG_ID", 1),
    ]
    history = await vault.sets.versions(PATH)
    for shown in (view, await vault.sets.get(PATH), *history):
        assert CANARY not in json.dumps(asdict(shown)) + repr(shown)
    assert await values(vault) == {"OPENAI_API_KEY": CANARY, "ORG_ID": "org-1"}


async def test_each_change_makes_a_version_and_keys_remember_where_they_changed(
    vault: Vault, ctx: Context
):
    await create_set(vault, ctx, entries={"A_KEY": "a1", "B_KEY": "b1"})

    v2 = await vault.sets.update(ctx, PATH, entries={"A_KEY": "a2"})
    v3 = await vault.sets.update(ctx, PATH, entries={"B_KEY": None, "C_KEY": "c1"})
    v4 = await vault.sets.update(ctx, PATH, entries={"A_KEY": "a2", "C_KEY": "c2"})

    assert {k: v.version for k, v in keys_of(v2).items()} == {"A_KEY": 2, "B_KEY": 1}
    assert {k: v.version for k, v in keys_of(v3).items()} == {"A_KEY": 2, "C_KEY": 3}
    assert {k: v.version for k, v in keys_of(v4).items()} == {"A_KEY": 2, "C_KEY": 4}
    assert v4.version == 4
    history = await vault.sets.versions(PATH)
    assert [(h.version, h.reason, list(h.keys)) for h in history] == [
        (4, "update", ["A_KEY", "C_KEY"]),
        (3, "update", ["A_KEY", "C_KEY"]),
        (2, "update", ["A_KEY", "B_KEY"]),
        (1, "create", ["A_KEY", "B_KEY"]),
    ]
    assert await values(vault, version=1) == {"A_KEY": "a1", "B_KEY": "b1"}
    assert await values(vault, version=3) == {"A_KEY": "a2", "C_KEY": "c1"}
    assert await values(vault) == {"A_KEY": "a2", "C_KEY": "c2"}


async def test_removing_a_key_that_is_not_there_changes_nothing(vault: Vault, ctx: Context):
    await create_set(vault, ctx)
    before = await snapshot(vault)

    view = await vault.sets.update(ctx, PATH, entries={"NOT_THERE": None})

    assert view.version == 1
    assert await snapshot(vault) == before


async def test_fingerprints_match_equal_values_only_and_hold_no_value(vault: Vault, ctx: Context):
    first = await create_set(vault, ctx, entries={"A_KEY": CANARY, "B_KEY": CANARY, "C_KEY": "c"})
    other = await create_set(vault, ctx, "stripe/prod/x", entries={"STRIPE_KEY": CANARY})
    updated = await vault.sets.update(ctx, PATH, entries={"C_KEY": "something else"})

    marks = {k: v.fingerprint for k, v in keys_of(first).items()}
    assert marks["A_KEY"] == marks["B_KEY"] == keys_of(other)["STRIPE_KEY"].fingerprint
    assert marks["C_KEY"] != marks["A_KEY"]
    assert keys_of(updated)["A_KEY"].fingerprint == marks["A_KEY"]
    assert keys_of(updated)["C_KEY"].fingerprint != marks["C_KEY"]
    for mark in marks.values():
        assert mark.startswith("hmac-sha256:")
        assert CANARY not in mark
        assert CANARY[:8] not in mark
        assert CANARY[-8:] not in mark


async def test_fingerprints_are_stable_across_restarts(vault: Vault, ctx: Context, settings: Any):
    created = await create_set(vault, ctx)
    again = await Vault.open(settings)
    try:
        view = await create_set(again, ctx, "openai/dev/default")
    finally:
        await again.close()

    assert view.keys[0].fingerprint == created.keys[0].fingerprint


async def test_rollback_makes_a_new_version_with_the_old_values(vault: Vault, ctx: Context):
    await create_set(vault, ctx, entries={"A_KEY": "a1", "B_KEY": "b1"})
    await vault.sets.update(ctx, PATH, entries={"A_KEY": "a2", "B_KEY": None})

    view = await vault.sets.rollback(ctx, PATH, 1)

    assert view.version == 3
    assert await values(vault) == {"A_KEY": "a1", "B_KEY": "b1"}
    assert {k: v.version for k, v in keys_of(view).items()} == {"A_KEY": 3, "B_KEY": 3}
    newest = (await vault.sets.versions(PATH))[0]
    assert (newest.version, newest.reason, newest.rollback_of) == (3, "rollback", 1)
    assert await values(vault, version=2) == {"A_KEY": "a2"}


async def test_rollback_to_values_the_profile_cannot_use_changes_nothing(
    vault: Vault, ctx: Context
):
    await create_set(vault, ctx, entries={"OTHER_KEY": "x"})
    await vault.sets.update(ctx, PATH, entries={"OPENAI_API_KEY": CANARY}, profile=OPENAI)
    before = await snapshot(vault)

    with pytest.raises(ValidationFailed, match="OPENAI_API_KEY"):
        await vault.sets.rollback(ctx, PATH, 1)

    assert await snapshot(vault) == before


async def test_rollback_to_a_missing_version_changes_nothing(vault: Vault, ctx: Context):
    await create_set(vault, ctx)
    before = await snapshot(vault)

    with pytest.raises(NotFound):
        await vault.sets.rollback(ctx, PATH, 5)

    assert await snapshot(vault) == before


async def test_expected_version_mismatch_is_a_conflict_and_writes_nothing(
    vault: Vault, ctx: Context
):
    await create_set(vault, ctx)
    await vault.sets.update(ctx, PATH, entries={"OPENAI_API_KEY": "v2"})
    before = await snapshot(vault)

    with pytest.raises(Conflict) as caught:
        await vault.sets.update(ctx, PATH, entries={"OPENAI_API_KEY": "v3"}, expected_version=1)
    with pytest.raises(Conflict):
        await vault.sets.rollback(ctx, PATH, 1, expected_version=1)

    assert caught.value.extra == {"current_version": 2}
    assert await snapshot(vault) == before
    view = await vault.sets.update(ctx, PATH, entries={"OPENAI_API_KEY": "v3"}, expected_version=2)
    assert view.version == 3


# -- delete, restore, purge ---------------------------------------------------------------


async def test_delete_hides_and_restore_brings_back(vault: Vault, ctx: Context):
    await create_set(vault, ctx)
    await create_set(vault, ctx, "openai/dev/default")

    deleted = await vault.sets.delete(ctx, PATH)

    assert deleted.deleted_at is not None
    assert await listed(vault) == ["openai/dev/default"]
    assert await listed(vault, include_deleted=True) == ["openai/dev/default", PATH]
    with pytest.raises(NotFound):
        await vault.sets.reveal(PATH)
    with pytest.raises(NotFound):
        await vault.sets.update(ctx, PATH, entries={"OPENAI_API_KEY": "x"})
    with pytest.raises(NotFound):
        await vault.sets.delete(ctx, PATH)

    restored = await vault.sets.restore(ctx, PATH)

    assert restored.deleted_at is None
    assert await listed(vault) == ["openai/dev/default", PATH]
    assert await values(vault) == {"OPENAI_API_KEY": CANARY}
    with pytest.raises(Conflict):
        await vault.sets.restore(ctx, PATH)


async def test_purge_needs_a_delete_first(vault: Vault, ctx: Context):
    await create_set(vault, ctx)
    before = await snapshot(vault)

    with pytest.raises(Conflict, match="deleted"):
        await vault.sets.purge(ctx, PATH)

    assert await snapshot(vault) == before


async def test_purge_removes_every_version(vault: Vault, ctx: Context):
    created = await create_set(vault, ctx)
    await vault.sets.update(ctx, PATH, entries={"OPENAI_API_KEY": "v2"})
    await create_set(vault, ctx, "openai/dev/default")
    await vault.sets.delete(ctx, PATH)

    assert await vault.sets.purge(ctx, PATH) == Purged(purged=PATH, versions=2)

    assert await version_count(vault) == 1
    assert await listed(vault, include_deleted=True) == ["openai/dev/default"]
    with pytest.raises(NotFound):
        await vault.sets.get(PATH)
    with pytest.raises(NotFound):
        await vault.sets.restore(ctx, PATH)
    again = await create_set(vault, ctx)
    assert (again.version, again.id != created.id) == (1, True)


@pytest.mark.parametrize("deleted", [False, True], ids=["live", "soft-deleted"])
async def test_a_taken_name_is_a_conflict(vault: Vault, ctx: Context, deleted: bool):
    await create_set(vault, ctx)
    if deleted:
        await vault.sets.delete(ctx, PATH)
    before = await snapshot(vault)

    with pytest.raises(Conflict, match="deleted" if deleted else "exists"):
        await create_set(vault, ctx, entries={"OPENAI_API_KEY": "another"})

    assert await snapshot(vault) == before


# -- validation ---------------------------------------------------------------------------

HTTP_PROFILE = {
    "base_url": "http://api.example.com",
    "hosts": ["api.example.com"],
    "inject": {"kind": "bearer", "key": "OPENAI_API_KEY"},
}
TOO_LONG = CANARY + "x" * (64 * 1024 - len(CANARY) + 1)


def case(case_id: str, field: str, body: dict[str, Any]) -> Any:
    """One invalid request body and the field its error must name."""
    return pytest.param(field, body, id=case_id)


BAD_CREATES = [
    case("provider-uppercase", "provider", {"provider": "OpenAI"}),
    case("provider-empty", "provider", {"provider": ""}),
    case("provider-leading-dash", "provider", {"provider": "-openai"}),
    case("provider-too-long", "provider", {"provider": "a" * 65}),
    case("provider-dot", "provider", {"provider": "open.ai"}),
    case("environment-space", "environment", {"environment": "pro d"}),
    case("name-unicode", "name", {"name": "d\u00e9faut"}),
    case("key-lowercase", "entries", {"entries": {"openai_api_key": CANARY}}),
    case("key-leading-digit", "entries", {"entries": {"1_KEY": CANARY}}),
    case("key-dash", "entries", {"entries": {"API-KEY": CANARY}}),
    case("value-too-long", "entries", {"entries": {"OPENAI_API_KEY": TOO_LONG}}),
    case("value-empty", "entries", {"entries": {"OPENAI_API_KEY": ""}}),
    case("value-lone-surrogate", "entries", {"entries": {"OPENAI_API_KEY": CANARY + "\ud800"}}),
    case("value-nul", "entries", {"entries": {"OPENAI_API_KEY": CANARY + "\x00"}}),
    case("value-int", "entries", {"entries": {"OPENAI_API_KEY": 12345}}),
    case("value-null", "entries", {"entries": {"OPENAI_API_KEY": None}}),
    case("value-bool", "entries", {"entries": {"OPENAI_API_KEY": True}}),
    case("value-list", "entries", {"entries": {"OPENAI_API_KEY": [CANARY]}}),
    case("value-object", "entries", {"entries": {"OPENAI_API_KEY": {"v": CANARY}}}),
    case("no-keys", "entries", {"entries": {}}),
    case("257-keys", "entries", {"entries": {f"KEY_{i}": CANARY for i in range(257)}}),
    case("33-labels", "labels", {"labels": {f"l{i}": "x" for i in range(33)}}),
    case("label-bad-name", "labels", {"labels": {"Team": "x"}}),
    case("label-reserved", "labels", {"labels": {"provider": "x"}}),
    case("label-not-string", "labels", {"labels": {"team": 5}}),
    case("label-too-long", "labels", {"labels": {"team": "x" * 257}}),
    case("label-lone-surrogate", "labels", {"labels": {"team": "\udfff"}}),
    case(
        "profile-names-a-missing-key",
        "profile",
        {"entries": {"OTHER_KEY": CANARY}, "profile": OPENAI},
    ),
    case("profile-http", "profile", {"profile": HTTP_PROFILE}),
    case(
        "profile-loopback",
        "profile",
        {"profile": {**HTTP_PROFILE, "base_url": "https://127.0.0.1", "hosts": ["127.0.0.1"]}},
    ),
    case("profile-unknown-preset", "profile", {"profile": {"preset": "no-such-provider"}}),
    case("profile-unknown-field", "profile", {"profile": {**OPENAI, "surprise": True}}),
    case(
        "profile-bad-inject",
        "profile",
        {
            "profile": {
                **HTTP_PROFILE,
                "base_url": "https://api.example.com",
                "inject": {"kind": "smoke-signal"},
            }
        },
    ),
]

BAD_UPDATES = [
    case("key-lowercase", "entries", {"entries": {"lower": "x"}}),
    case("value-too-long", "entries", {"entries": {"OPENAI_API_KEY": TOO_LONG}}),
    case("value-empty", "entries", {"entries": {"OPENAI_API_KEY": ""}}),
    case("value-int", "entries", {"entries": {"OPENAI_API_KEY": 5}}),
    case("257-keys", "entries", {"entries": {f"KEY_{i}": "x" for i in range(256)}}),
    case("remove-every-key", "entries", {"entries": {"OPENAI_API_KEY": None}}),
    case(
        "remove-a-key-the-profile-needs",
        "profile",
        {"entries": {"OPENAI_API_KEY": None, "OTHER": CANARY}},
    ),
    case("33-labels", "labels", {"labels": {f"l{i}": "x" for i in range(33)}}),
    case("profile-http", "profile", {"profile": HTTP_PROFILE}),
    case("profile-unknown-preset", "profile", {"profile": {"preset": "no-such-provider"}}),
    case("profile-names-a-missing-key", "profile", {"profile": {"preset": "anthropic"}}),
]


def assert_names_field(error: ValidationFailed, field: str) -> None:
    """The error names the offending field (and never the submitted value)."""
    assert [e["loc"][0] for e in error.extra["errors"]] == [field]
    assert str(error).startswith(field)
    assert CANARY not in str(error) + json.dumps(error.problem())


@pytest.mark.parametrize(("field", "body"), BAD_CREATES)
async def test_invalid_create_is_refused_and_changes_nothing(
    vault: Vault,
    ctx: Context,
    existing: dict[str, Any],
    field: str,
    body: dict[str, Any],
):
    before = await snapshot(vault)
    fields = {
        "provider": "stripe",
        "environment": "prod",
        "name": "new",
        "entries": {"OPENAI_API_KEY": CANARY},
        **body,
    }

    with pytest.raises(ValidationFailed) as caught:
        await vault.sets.create(ctx, **fields)

    assert_names_field(caught.value, field)
    assert await snapshot(vault) == before


@pytest.mark.parametrize(("field", "body"), BAD_UPDATES)
async def test_invalid_update_is_refused_and_changes_nothing(
    vault: Vault,
    ctx: Context,
    existing: dict[str, Any],
    field: str,
    body: dict[str, Any],
):
    before = await snapshot(vault)

    with pytest.raises(ValidationFailed) as caught:
        await vault.sets.update(ctx, PATH, **body)

    assert_names_field(caught.value, field)
    assert await snapshot(vault) == before
    assert await values(vault) == {"OPENAI_API_KEY": CANARY}


async def test_limits_are_inclusive(vault: Vault, ctx: Context):
    largest = "v" * (64 * 1024)
    entries = {f"KEY_{i}": "x" for i in range(255)} | {"BIG": largest}

    view = await create_set(
        vault, ctx, entries=entries, labels={f"l{i}": "y" * 256 for i in range(32)}
    )

    assert len(view.keys) == 256
    assert len(view.labels) == 32
    assert (await values(vault))["BIG"] == largest


async def test_http_upstream_is_allowed_when_the_profile_says_so(vault: Vault, ctx: Context):
    view = await create_set(vault, ctx, profile={**HTTP_PROFILE, "allow_private_upstream": True})

    assert view.profile["base_url"] == "http://api.example.com"
    assert view.profile["allow_private_upstream"] is True


async def test_profile_changes_are_checked_against_the_new_keys(
    vault: Vault, ctx: Context, existing: dict[str, Any]
):
    view = await vault.sets.update(
        ctx,
        PATH,
        entries={"OPENAI_API_KEY": None, "ANTHROPIC_API_KEY": "a"},
        profile={"preset": "anthropic"},
    )

    assert view.version == 2
    assert view.profile["preset"] == "anthropic"
    assert view.profile["hosts"] == ["api.anthropic.com"]


# -- presets ------------------------------------------------------------------------------


def preset_spec(preset: Preset) -> dict[str, Any]:
    """The smallest profile an operator sends for ``preset``; generic ones need an upstream."""
    spec: dict[str, Any] = {"preset": preset.name}
    if "base_url" not in preset.defaults({}):
        spec |= {"base_url": "https://api.example.com", "hosts": ["api.example.com"]}
    if preset.name == "oauth":  # the generic OAuth preset has no token endpoint of its own
        spec["token_url"] = "https://auth.example.com/token"
    return spec


def sample_entries(preset: Preset) -> dict[str, str]:
    """A value for each required field; key material where the preset checks its form."""
    entries = {f.key: f"{f.key.lower()}-value" for f in preset.fields if f.required}
    if preset.name == "google_service_account":
        account = {
            "type": "service_account",
            "private_key": rsa_pem()[0],
            "client_email": "bot@project.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
        entries["SERVICE_ACCOUNT_JSON"] = json.dumps(account)
    if preset.name == "github_app":
        entries |= {
            "GITHUB_APP_ID": "4242",
            "GITHUB_APP_PRIVATE_KEY": rsa_pem()[0],
            "GITHUB_INSTALLATION_ID": "42",
        }
    if preset.name == "oauth":  # optional on the form (connect fills it), named by the grant
        entries["REFRESH_TOKEN"] = "refresh-token-value"
    return entries


@pytest.mark.parametrize("preset", all_presets(), ids=lambda p: p.name)
async def test_every_preset_resolves_with_its_required_fields(
    vault: Vault, ctx: Context, preset: Preset
):
    required = sample_entries(preset)
    for field in preset.fields:
        check_key_name(field.key)

    view = await create_set(
        vault, ctx, f"{preset.name}/prod/default", entries=required, profile=preset_spec(preset)
    )

    profile = Profile.model_validate(view.profile)
    assert profile.preset == preset.name
    assert profile.base_url.startswith("https://")
    assert set(profile.referenced_keys()) <= set(required)
    assert profile.allow_private_upstream is False
    assert await values(vault, f"{preset.name}/prod/default") == required


async def test_a_listing_reads_a_fixed_number_of_statements_however_many_sets(
    vault: Vault, ctx: Context
) -> None:
    """The current versions of a page come in one query, not one per set (N+1)."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async def statements_to_list(expected: int) -> int:
        statements.clear()
        event.listen(vault.db.engine.sync_engine, "before_cursor_execute", count)
        try:
            items, _ = await vault.sets.search()
        finally:
            event.remove(vault.db.engine.sync_engine, "before_cursor_execute", count)
        assert len(items) == expected
        assert all(item.keys for item in items)  # the current version's keys are shown
        return len(statements)

    await create_set(vault, ctx, "openai/prod/a0")
    few = await statements_to_list(1)
    for n in range(1, 12):
        await create_set(vault, ctx, f"openai/prod/a{n}")
    assert await statements_to_list(12) == few
