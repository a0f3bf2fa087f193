"""A set's page at scale: edit its profile, purge it once deleted, see who used it last;
and the overview's first-run guide."""

from __future__ import annotations

import re

import httpx

from keyfob.vault import Context, Principal, ProxyRequest, Vault
from keyfob.vault.leases import IssuedLease
from tests.conftest import CANARY
from tests.dashboard.conftest import Ui

CTX = Context("operator:test")
PATH = "openai/prod/default"
PAGE = f"/ui/credentials/{PATH}"


def clean(response: httpx.Response) -> httpx.Response:
    assert CANARY not in response.text
    assert CANARY not in response.headers.get("location", "")
    return response


async def make_set(vault: Vault, path: str = PATH) -> None:
    provider, environment, name = path.split("/")
    await vault.sets.create(
        CTX,
        provider=provider,
        environment=environment,
        name=name,
        entries={"OPENAI_API_KEY": CANARY},
        profile={"preset": "openai"},
    )


async def user_actions(vault: Vault, ui: Ui) -> list[tuple[str, dict[str, object]]]:
    events = await vault.audit.query(target=f"secret_set:{PATH}", actor=f"user:{ui.user_id}")
    return [(e.action, e.details) for e in events]


PROFILE = {
    "expected": "1",
    "preset": "openai",
    "base_url": "https://eu.api.openai.com/v1",
    "hosts": "eu.api.openai.com\napi.openai.com",
    "inject": '{"kind": "header", "name": "X-Api-Key", "template": "Key {OPENAI_API_KEY}"}',
    "scrub": "1",
}


async def test_edit_the_profile_through_the_apis_validation(ui: Ui, vault: Vault) -> None:
    await make_set(vault)
    shown = clean(await ui.get(PAGE))
    assert 'action="/ui/credentials/openai/prod/default/profile"' in shown.text
    assert "api.openai.com</textarea>" in shown.text

    saved = clean(await ui.post(f"{PAGE}/profile", PROFILE, form_page=PAGE))

    assert saved.status_code == 303
    assert saved.headers["location"] == f"{PAGE}?done=profile-saved"
    view = await vault.sets.get(PATH)
    assert view.version == 2
    assert view.profile is not None
    assert view.profile["base_url"] == "https://eu.api.openai.com/v1"
    assert view.profile["hosts"] == ["eu.api.openai.com", "api.openai.com"]
    assert view.profile["inject"] == {
        "kind": "header",
        "name": "X-Api-Key",
        "template": "Key {OPENAI_API_KEY}",
    }
    assert ("secret_set.update", {"version": 2, "profile_changed": True}) in [
        (a, {k: d[k] for k in ("version", "profile_changed") if k in d})
        for a, d in await user_actions(vault, ui)
    ]


async def test_a_refused_profile_says_why_and_changes_nothing(ui: Ui, vault: Vault) -> None:
    await make_set(vault)
    cases = [
        ({"hosts": "api.openai.com"}, "base_url host must be one of hosts"),
        ({"inject": '{"kind": "bearer", "key": "NOT_A_KEY_OF_IT"}'}, "NOT_A_KEY_OF_IT"),
        ({"inject": "{not json"}, "not JSON"),
        ({"base_url": "http://eu.api.openai.com/v1"}, "allow_private_upstream"),
        ({"hosts": "169.254.169.254\neu.api.openai.com"}, "never a permitted upstream"),
    ]
    for change, reason in cases:
        answer = clean(await ui.post(f"{PAGE}/profile", {**PROFILE, **change}, form_page=PAGE))
        assert answer.status_code == 422, (change, answer.status_code)
        assert reason in answer.text, (change, reason)
        assert '<details id="edit-profile" open>' in answer.text  # what was typed stays
    view = await vault.sets.get(PATH)
    assert view.version == 1
    assert view.profile is not None
    assert view.profile["hosts"] == ["api.openai.com"]


async def test_profile_and_purge_need_the_csrf_token(ui: Ui, vault: Vault) -> None:
    await make_set(vault)
    await vault.sets.delete(CTX, PATH)
    for url, data in ((f"{PAGE}/profile", PROFILE), (f"{PAGE}/purge", {"confirm": PATH})):
        assert (await ui.http.post(url, data=data)).status_code == 403
        assert (await ui.http.post(url, data={**data, "csrf": "forged"})).status_code == 403
    view = await vault.sets.get(PATH)
    assert view.version == 1
    assert view.deleted_at is not None


async def test_purge_needs_a_deleted_set_and_its_name_typed(ui: Ui, vault: Vault) -> None:
    await make_set(vault)
    live = clean(await ui.get(PAGE))
    assert "/purge" not in live.text  # only a deleted set offers purge
    refused = clean(await ui.post(f"{PAGE}/purge", {"confirm": PATH}, form_page=PAGE))
    assert refused.status_code == 409
    assert "must be deleted before it can be purged" in refused.text

    await vault.sets.delete(CTX, PATH)
    deleted = clean(await ui.get(PAGE))
    assert f'action="{PAGE}/purge"' in deleted.text
    for typed in ("", "openai/prod/defaul", "openai/prod/other"):
        wrong = clean(await ui.post(f"{PAGE}/purge", {"confirm": typed}, form_page=PAGE))
        assert wrong.status_code == 422
        assert f"type the set&#39;s path, {PATH}, to purge it" in wrong.text
    assert (await vault.sets.get(PATH)).deleted_at is not None

    purged = clean(await ui.post(f"{PAGE}/purge", {"confirm": PATH}, form_page=PAGE))

    assert purged.status_code == 303
    assert purged.headers["location"] == "/ui/credentials?deleted=1&done=purged"
    assert (await ui.get(PAGE)).status_code == 404
    assert [a for a, _ in await user_actions(vault, ui)][-1] == "secret_set.purge"
    listing = clean(await ui.get(purged.headers["location"]))
    assert "Purged" in listing.text
    assert PATH not in listing.text


async def test_last_used_by_whom(ui: Ui, vault: Vault) -> None:
    await make_set(vault)
    assert "Never used: no agent has a grant on it yet" in (await ui.get(PAGE)).text
    tokens = []
    for name, uses in (("billing-bot", 2), ("support-bot", 1)):
        agent, _ = await vault.agents.create(CTX, name)
        await vault.grants.create(CTX, {"agent": name, "secret_set": PATH, "scopes": ["workflow"]})
        bot = Principal("agent", agent.id, name)
        issued = await vault.leases.mint(
            bot, Context(bot.actor), secret_set=PATH, scope="workflow", max_uses=5
        )
        assert isinstance(issued, IssuedLease)
        tokens.append(issued.token.reveal())
        for n in range(uses):
            request = ProxyRequest(tokens[-1], PATH, "GET", "/", (), f"{name}-{n}", None, "/proxy")
            await vault.proxy.begin(request)

    page = clean(await ui.get(PAGE))

    section = page.text.split('id="last-used"')[1].split("</section>")[0]
    found = re.findall(
        r"<tr><td>([^<]+)</td><td>[^<]+</td><td>(\w+)</td><td>(\d+)</td></tr>", section
    )
    # Newest first: support-bot used it last; billing-bot twice before that.
    assert found == [("support-bot", "proxy", "1"), ("billing-bot", "proxy", "2")]
    for token in tokens:
        assert token not in page.text


async def test_first_sign_in_shows_the_guide(ui: Ui, vault: Vault) -> None:
    first = clean(await ui.get("/ui/"))
    assert 'id="getting-started"' in first.text
    assert "four steps to a first proxied request" in first.text
    steps = re.findall(r'<li class="(done|todo)">\s*<a href="([^"]+)">', first.text)
    assert steps == [
        ("todo", "/ui/credentials/new"),
        ("todo", "/ui/agents"),
        ("todo", "/ui/grants/new"),
        ("todo", "/ui/credentials"),
    ]
    assert "<strong>0</strong> Secret sets" in first.text

    def states(text: str) -> list[str]:
        return [s for s, _ in re.findall(r'<li class="(done|todo)">\s*<a href="([^"]+)">', text)]

    agent, _ = await vault.agents.create(CTX, "bot")
    assert states(clean(await ui.get("/ui/")).text) == ["todo", "done", "todo", "todo"]
    await make_set(vault)
    later = clean(await ui.get("/ui/"))
    assert "Getting started" in later.text
    assert states(later.text) == ["done", "done", "todo", "todo"]
    assert "<strong>1</strong> Secret sets" in later.text
    await vault.grants.create(CTX, {"agent": "bot", "secret_set": PATH})
    assert states(clean(await ui.get("/ui/")).text) == ["done", "done", "done", "todo"]
    bot = Principal("agent", agent.id, "bot")
    assert isinstance(
        await vault.leases.mint(bot, Context(bot.actor), secret_set=PATH), IssuedLease
    )
    assert 'id="getting-started"' not in clean(await ui.get("/ui/")).text  # all done: gone


async def test_server_timing_on_pages_but_never_on_a_sign_in(ui: Ui, vault: Vault) -> None:
    for url in ("/ui/", "/ui/audit", "/ui/credentials"):
        timing = (await ui.get(url)).headers.get("server-timing", "")
        assert re.fullmatch(r"app;dur=\d+\.\d", timing), (url, timing)
    form = await ui.get("/ui/login")
    signed = await ui.http.post("/ui/login", data={"name": "alice", "password": "wrong"})
    assert form.headers.get("server-timing")
    assert "server-timing" not in signed.headers
