"""Credential pages: pick a service, enter the key, save; then update, roll back, delete."""

from __future__ import annotations

import re

import httpx
import pytest

from keyfob.vault import Context, Principal, ProxyRequest, Vault
from keyfob.vault.leases import IssuedLease
from tests.conftest import CANARY
from tests.dashboard.conftest import Ui

OPENAI = "/ui/credentials/openai/prod/default"
OTHER = "sk-other-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"


def clean(response: httpx.Response) -> httpx.Response:
    """Assert the response never carries a secret value, in its body or its Location."""
    for value in (CANARY, OTHER):
        assert value not in response.text
        assert value not in response.headers.get("location", "")
    return response


async def add(ui: Ui, preset: str, data: dict[str, str]) -> httpx.Response:
    form = f"/ui/credentials/new/{preset}"
    return clean(await ui.post(form, data, form_page=form))


async def user_actions(vault: Vault, ui: Ui, path: str) -> list[str]:
    events = await vault.audit.query(target=f"secret_set:{path}", actor=f"user:{ui.user_id}")
    return [e.action for e in events]


async def test_add_openai_through_picker_form_and_save(ui: Ui, vault: Vault) -> None:
    listing = clean(await ui.get("/ui/credentials"))
    assert 'href="/ui/credentials/new"' in listing.text
    picker = clean(await ui.get("/ui/credentials/new"))
    for title in ("OpenAI", "Anthropic", "Stripe", "GitHub", "Slack", "Twilio", "AWS", "Other"):
        assert title in picker.text
    assert 'href="/ui/credentials/new/openai"' in picker.text
    form = clean(await ui.get("/ui/credentials/new/openai"))
    assert 'type="password" name="v_OPENAI_API_KEY" autocomplete="new-password"' in form.text
    assert 'value="prod"' in form.text
    assert "api.openai.com" in form.text

    saved = await add(
        ui, "openai", {"v_OPENAI_API_KEY": CANARY, "environment": "prod", "name": "default"}
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{OPENAI}?done=created"

    view = await vault.sets.get("openai/prod/default")
    assert view.provider == "openai"
    assert view.profile["hosts"] == ["api.openai.com"]
    setpage = clean(await ui.get(saved.headers["location"]))
    assert setpage.status_code == 200
    assert "Saved." in setpage.text
    assert view.keys[0].fingerprint in setpage.text
    assert "OPENAI_API_KEY" in setpage.text
    assert "bearer" in setpage.text
    assert "Never exported" in setpage.text
    assert await user_actions(vault, ui, "openai/prod/default") == ["secret_set.create"]
    listing = clean(await ui.get("/ui/credentials?provider=openai"))
    assert "openai/prod/default" in listing.text


async def test_stripe_skips_empty_optional_fields(ui: Ui, vault: Vault) -> None:
    saved = await add(
        ui,
        "stripe",
        {
            "v_STRIPE_SECRET_KEY": CANARY,
            "v_STRIPE_WEBHOOK_SECRET": "",
            "v_STRIPE_ACCOUNT_ID": "acct_123",
            "environment": "test",
            "name": "shop",
        },
    )
    assert saved.status_code == 303
    view = await vault.sets.get("stripe/test/shop")
    assert sorted(k.name for k in view.keys) == ["STRIPE_ACCOUNT_ID", "STRIPE_SECRET_KEY"]
    revealed = await vault.sets.reveal("stripe/test/shop")
    assert revealed["STRIPE_ACCOUNT_ID"].reveal() == "acct_123"


async def test_aws_options_shape_the_profile(ui: Ui, vault: Vault) -> None:
    form = clean(await ui.get("/ui/credentials/new/aws"))
    assert 'name="region" value="us-east-1"' in form.text
    assert 'type="text" name="v_AWS_ACCESS_KEY_ID"' in form.text
    saved = await add(
        ui,
        "aws",
        {
            "v_AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "v_AWS_SECRET_ACCESS_KEY": CANARY,
            "region": "eu-west-1",
            "service": "sqs",
            "environment": "prod",
            "name": "default",
        },
    )
    assert saved.status_code == 303
    profile = (await vault.sets.get("aws/prod/default")).profile
    assert profile["hosts"] == ["sqs.eu-west-1.amazonaws.com"]
    assert profile["inject"]["region"] == "eu-west-1"
    page = clean(await ui.get("/ui/credentials/aws/prod/default"))
    assert "sqs.eu-west-1.amazonaws.com" in page.text
    assert "aws_sigv4" in page.text


async def test_generic_uses_the_given_key_name_and_host(ui: Ui, vault: Vault) -> None:
    saved = await add(
        ui,
        "generic",
        {
            "v_API_KEY": CANARY,
            "key_name": "ACME_TOKEN",
            "base_url": "https://api.acme.example",
            "host": "",
            "environment": "prod",
            "name": "acme",
        },
    )
    assert saved.status_code == 303
    view = await vault.sets.get("generic/prod/acme")
    assert [k.name for k in view.keys] == ["ACME_TOKEN"]
    assert view.profile["hosts"] == ["api.acme.example"]
    assert view.profile["inject"] == {"kind": "bearer", "key": "ACME_TOKEN"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"environment": "Prod!", "name": "default"}, "environment must be"),
        ({"environment": "prod", "name": "default", "region": "EU WEST"}, "region"),
    ],
)
async def test_validation_error_keeps_the_form_without_the_value(
    ui: Ui, vault: Vault, data: dict[str, str], reason: str
) -> None:
    answer = await add(
        ui, "aws", {"v_AWS_ACCESS_KEY_ID": "AKIAKEEPME", "v_AWS_SECRET_ACCESS_KEY": CANARY, **data}
    )
    assert answer.status_code == 422
    assert reason in answer.text
    assert 'value="AKIAKEEPME"' in answer.text  # a non-secret field is refilled
    assert 'name="v_AWS_SECRET_ACCESS_KEY" autocomplete="new-password"' in answer.text
    assert (await vault.sets.search(include_deleted=True))[0] == []


async def test_missing_required_key_and_taken_name(ui: Ui, vault: Vault) -> None:
    missing = await add(
        ui, "openai", {"v_OPENAI_API_KEY": " ", "environment": "prod", "name": "default"}
    )
    assert missing.status_code == 422
    assert "API key is required" in missing.text
    await add(ui, "openai", {"v_OPENAI_API_KEY": CANARY, "environment": "prod", "name": "default"})
    taken = await add(
        ui, "openai", {"v_OPENAI_API_KEY": OTHER, "environment": "prod", "name": "default"}
    )
    assert taken.status_code == 409
    assert "already exists" in taken.text
    assert (await vault.sets.get("openai/prod/default")).version == 1


async def test_update_rollback_delete_restore(ui: Ui, vault: Vault) -> None:
    path = "openai/prod/default"
    await add(ui, "openai", {"v_OPENAI_API_KEY": CANARY, "environment": "prod", "name": "default"})
    first = (await vault.sets.get(path)).keys[0].fingerprint

    updated = clean(
        await ui.post(
            f"{OPENAI}/update", {"key": "OPENAI_API_KEY", "value": OTHER}, form_page=OPENAI
        )
    )
    assert updated.headers["location"] == f"{OPENAI}?done=updated"
    view = await vault.sets.get(path)
    assert view.version == 2
    assert view.keys[0].fingerprint != first
    page = clean(await ui.get(OPENAI))
    assert "Roll back to v1" in page.text

    rolled = clean(await ui.post(f"{OPENAI}/rollback", {"version": "1"}, form_page=OPENAI))
    assert rolled.headers["location"] == f"{OPENAI}?done=rolled-back"
    view = await vault.sets.get(path)
    assert (view.version, view.keys[0].fingerprint) == (3, first)

    added = await ui.post(
        f"{OPENAI}/update", {"key": "OPENAI_ORG", "value": "org-1"}, form_page=OPENAI
    )
    assert added.status_code == 303
    removed = await ui.post(f"{OPENAI}/remove", {"key": "OPENAI_ORG"}, form_page=OPENAI)
    assert removed.status_code == 303
    assert [k.name for k in (await vault.sets.get(path)).keys] == ["OPENAI_API_KEY"]

    deleted = clean(await ui.post(f"{OPENAI}/delete", {}, form_page=OPENAI))
    assert deleted.headers["location"] == f"{OPENAI}?done=deleted"
    assert (await vault.sets.get(path)).deleted_at is not None
    assert "openai/prod/default" not in (await ui.get("/ui/credentials")).text
    assert "deleted" in clean(await ui.get("/ui/credentials?deleted=1")).text
    restored = clean(await ui.post(f"{OPENAI}/restore", {}, form_page=OPENAI))
    assert restored.headers["location"] == f"{OPENAI}?done=restored"
    assert (await vault.sets.get(path)).deleted_at is None

    assert await user_actions(vault, ui, path) == [
        "secret_set.create",
        "secret_set.update",
        "secret_set.rollback",
        "secret_set.update",
        "secret_set.update",
        "secret_set.delete",
        "secret_set.restore",
    ]


async def test_refused_changes_show_the_reason(ui: Ui, vault: Vault) -> None:
    await add(ui, "openai", {"v_OPENAI_API_KEY": CANARY, "environment": "prod", "name": "default"})
    last_key = clean(await ui.post(f"{OPENAI}/remove", {"key": "OPENAI_API_KEY"}, form_page=OPENAI))
    assert last_key.status_code == 422
    assert "needs at least one key" in last_key.text
    stale = clean(
        await ui.post(
            f"{OPENAI}/update",
            {"key": "OPENAI_API_KEY", "value": OTHER, "expected": "7"},
            form_page=OPENAI,
        )
    )
    assert stale.status_code == 409
    no_version = clean(await ui.post(f"{OPENAI}/rollback", {"version": "9"}, form_page=OPENAI))
    assert no_version.status_code == 404
    assert "no version 9" in no_version.text
    assert (await vault.sets.get("openai/prod/default")).version == 1
    missing = await ui.get("/ui/credentials/openai/prod/nope")
    assert missing.status_code == 404


async def test_post_without_csrf_changes_nothing(ui: Ui, vault: Vault) -> None:
    await add(ui, "openai", {"v_OPENAI_API_KEY": CANARY, "environment": "prod", "name": "default"})
    for url, data in [
        (
            "/ui/credentials/new/openai",
            {"v_OPENAI_API_KEY": OTHER, "environment": "prod", "name": "other"},
        ),
        (f"{OPENAI}/update", {"key": "OPENAI_API_KEY", "value": OTHER}),
        (f"{OPENAI}/delete", {}),
    ]:
        answer = clean(await ui.http.post(url, data=data))
        assert answer.status_code == 403
        forged = clean(await ui.http.post(url, data={**data, "csrf": "forged"}))
        assert forged.status_code == 403
    sets, _ = await vault.sets.search(include_deleted=True)
    assert [(s.path, s.version, s.deleted_at) for s in sets] == [
        ("openai/prod/default", 1, None)
    ]


async def test_pages_need_sign_in(vault: Vault, ui: Ui) -> None:
    cookies = ui.http.cookies
    ui.http.cookies = httpx.Cookies()
    try:
        answer = await ui.get("/ui/credentials")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/login"
    finally:
        ui.http.cookies = cookies


async def test_grants_and_last_use_per_key(ui: Ui, vault: Vault) -> None:
    ctx = Context("operator:test")
    await add(ui, "openai", {"v_OPENAI_API_KEY": CANARY, "environment": "prod", "name": "default"})
    assert re.search(r"<code>OPENAI_API_KEY</code>.*?never", (await ui.get(OPENAI)).text, re.S)
    view, _ = await vault.agents.create(ctx, "billing-bot")
    await vault.grants.create(
        ctx, {"agent": "billing-bot", "secret_set": "openai/prod/default", "scopes": ["workflow"]}
    )
    bot = Principal("agent", view.id, "billing-bot")
    issued = await vault.leases.mint(
        bot, Context(bot.actor), secret_set="openai/prod/default", scope="workflow", max_uses=3
    )
    assert isinstance(issued, IssuedLease)
    token = issued.token.reveal()
    request = ProxyRequest(token, "openai/prod/default", "GET", "/", (), "r1", None, "/proxy")
    await vault.proxy.begin(request)

    page = clean(await ui.get(OPENAI))
    assert re.search(r"<code>OPENAI_API_KEY</code>.*?by billing-bot \(proxy\)", page.text, re.S)
    assert re.search(r"<td>billing-bot</td><td>proxy", page.text)
    assert token not in page.text
