"""User lifecycle over the API and the dashboard: disable, enable, new password, delete.

Failed before the fix (no such routes or pages): a user could only be created.
"""

from __future__ import annotations

import httpx
import pytest

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault

from .conftest import PASSWORD, Ui, csrf_of, sign_in

NEW = "a brand new password, long enough"


def browser(vault: Vault, settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, vault=vault)),
        base_url="http://keyfob.test",
    )


async def signed_in(http: httpx.AsyncClient, name: str, password: str) -> bool:
    return (await http.get("/ui/")).status_code == 200


async def test_disable_and_delete_end_sessions_at_once(
    ui: Ui, vault: Vault, settings: Settings, client: httpx.AsyncClient
) -> None:
    created = await client.post("/v1/users", json={"name": "bob", "password": PASSWORD})
    assert created.status_code == 201
    async with browser(vault, settings) as bob:
        assert (await sign_in(bob, "bob", PASSWORD)).status_code == 303
        assert (await bob.get("/ui/")).status_code == 200

        disabled = await client.post("/v1/users/bob/disable")
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["disabled_at"]
        assert (await bob.get("/ui/")).status_code == 303  # back to the sign-in page
        assert (await sign_in(bob, "bob", PASSWORD)).status_code == 401

        assert (await client.post("/v1/users/bob/enable")).status_code == 200
        assert (await sign_in(bob, "bob", PASSWORD)).status_code == 303
        assert (await bob.get("/ui/")).status_code == 200

        deleted = await client.delete("/v1/users/bob")
        assert deleted.status_code == 200
        assert deleted.json()["deleted"] is True
        assert (await bob.get("/ui/")).status_code == 303
        assert (await client.get("/v1/users/bob")).status_code == 404
    actions = [e.action for e in await vault.audit.query(action="user.")]
    assert {"user.disable", "user.enable", "user.delete"} <= set(actions)
    (disable,) = await vault.audit.query(action="user.disable")
    assert disable.details["sessions_ended"] == 1


async def test_a_password_set_by_an_operator_ends_every_session(
    ui: Ui, vault: Vault, settings: Settings, client: httpx.AsyncClient
) -> None:
    changed = await client.post(f"/v1/users/{ui.user_id}/password", json={"password": NEW})
    assert changed.status_code == 200, changed.text
    assert PASSWORD not in changed.text
    assert NEW not in changed.text
    assert (await ui.get("/ui/")).status_code == 303
    async with browser(vault, settings) as again:
        assert (await sign_in(again, "alice", PASSWORD)).status_code == 401
        assert (await sign_in(again, "alice", NEW)).status_code == 303
    short = await client.post(f"/v1/users/{ui.user_id}/password", json={"password": "short"})
    assert short.status_code == 422


async def test_changing_your_own_password_ends_only_your_other_sessions(
    ui: Ui, vault: Vault, settings: Settings
) -> None:
    async with browser(vault, settings) as other:
        assert (await sign_in(other, "alice", PASSWORD)).status_code == 303
        form = f"/ui/users/{ui.user_id}/password"
        answer = await ui.post(form, {"password": NEW, "password_again": NEW}, form_page=form)
        assert answer.status_code == 303, answer.text
        assert (await ui.get("/ui/")).status_code == 200  # this session stays
        assert (await other.get("/ui/")).status_code == 303  # the other one ended
    (event,) = await vault.audit.query(action="user.password")
    assert event.details["sessions_ended"] == 1
    assert event.actor == f"user:{ui.user_id}"


async def test_the_users_page_disables_enables_and_deletes_others_but_not_yourself(
    ui: Ui, vault: Vault, settings: Settings, client: httpx.AsyncClient
) -> None:
    bob = (await client.post("/v1/users", json={"name": "bob", "password": PASSWORD})).json()
    page = await ui.get("/ui/users")
    assert page.status_code == 200
    assert "bob" in page.text
    assert f"/ui/users/{bob['id']}/disable" in page.text
    assert f"/ui/users/{ui.user_id}/disable" not in page.text

    answer = await ui.post(f"/ui/users/{bob['id']}/disable", {}, form_page="/ui/users")
    assert answer.status_code == 303
    assert (await vault.users.get("bob"))["disabled_at"]
    answer = await ui.post(f"/ui/users/{bob['id']}/enable", {}, form_page="/ui/users")
    assert (await vault.users.get("bob"))["disabled_at"] is None

    mine = await ui.post(f"/ui/users/{ui.user_id}/disable", {}, form_page="/ui/users")
    assert mine.status_code == 409
    assert (await ui.get("/ui/")).status_code == 200

    confirm = await ui.get(f"/ui/users/{bob['id']}/delete")
    assert confirm.status_code == 200
    token = csrf_of(confirm.text)
    gone = await ui.http.post(f"/ui/users/{bob['id']}/delete", data={"csrf": token})
    assert gone.status_code == 303
    assert [u["name"] for u in await vault.users.list_all()] == ["alice"]


@pytest.mark.parametrize("route", ["disable", "enable", "password"])
async def test_lifecycle_routes_need_an_operator(
    vault: Vault, settings: Settings, route: str
) -> None:
    async with browser(vault, settings) as anonymous:
        answer = await anonymous.post(f"/v1/users/alice/{route}", json={"password": NEW})
    assert answer.status_code == 401
