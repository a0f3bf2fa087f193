"""A set's page has a "Use it from an agent" panel: snippets for that set, placeholders only."""

from __future__ import annotations

import html
import json
import re

from keyfob.vault import Context, Principal, Vault
from keyfob.vault.leases import IssuedLease
from tests.conftest import CANARY
from tests.dashboard.conftest import Ui

CTX = Context("operator:test")
_SNIPPET = re.compile(r'<pre class="snippet" id="(snippet-[a-z]+)"><code>(.*?)</code></pre>', re.S)


def panel(page: str) -> dict[str, str]:
    """The panel's snippets by id, as a person copying them would get them (unescaped)."""
    return {id_: html.unescape(text) for id_, text in _SNIPPET.findall(page)}


async def make_set(vault: Vault, path: str, entries: dict[str, str], **profile: object) -> None:
    provider, environment, name = path.split("/")
    await vault.sets.create(
        CTX,
        provider=provider,
        environment=environment,
        name=name,
        entries=entries,
        profile=profile or None,
    )


async def test_openai_set_shows_every_snippet_for_that_set(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "openai/prod/default", {"OPENAI_API_KEY": CANARY}, preset="openai")
    page = await ui.get("/ui/credentials/openai/prod/default")
    assert page.status_code == 200
    assert "Use it from an agent" in page.text
    snippets = panel(page.text)
    assert set(snippets) == {"snippet-sdk", "snippet-run", "snippet-mcp", "snippet-curl"}
    addr = "http://keyfob.test"

    assert 'keyfob.sdk.openai(set="openai/prod/default")' in snippets["snippet-sdk"]
    assert "keyfob run --set openai/prod/default -- python app.py" in snippets["snippet-run"]
    config = json.loads(snippets["snippet-mcp"])  # valid JSON once copied
    server = config["mcpServers"]["keyfob"]
    assert server["command"] == "keyfob"
    assert server["args"][:2] == ["mcp", "--token-file"]
    assert server["env"] == {"KEYFOB_ADDR": addr}
    curl = snippets["snippet-curl"]
    assert "curl $KEYFOB_ADDR/proxy/openai/prod/default/v1/models" in curl
    assert '"secret_set": "openai/prod/default"' in curl
    # Each snippet has its copy button, wired by the dashboard's script.
    for id_ in snippets:
        assert f'data-copy="#{id_}"' in page.text
    assert CANARY not in page.text


async def test_other_providers_get_the_generic_http_client(ui: Ui, vault: Vault) -> None:
    await make_set(
        vault,
        "acme/prod/crm",
        {"ACME_TOKEN": CANARY},
        base_url="https://api.acme.example",
        hosts=["api.acme.example"],
        inject={"kind": "bearer", "key": "ACME_TOKEN"},
    )
    snippets = panel((await ui.get("/ui/credentials/acme/prod/crm")).text)
    assert 'keyfob.sdk.http_client(set="acme/prod/crm")' in snippets["snippet-sdk"]
    assert "keyfob.sdk.openai" not in snippets["snippet-sdk"]
    assert "keyfob run --set acme/prod/crm --" in snippets["snippet-run"]


async def test_panel_never_shows_a_real_agent_token_or_lease(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "openai/prod/default", {"OPENAI_API_KEY": CANARY}, preset="openai")
    view, agent_token = await vault.agents.create(CTX, "billing-bot")
    await vault.grants.create(CTX, {"agent": "billing-bot", "secret_set": "openai/prod/default"})
    agent = Principal("agent", view.id, "billing-bot")
    issued = await vault.leases.mint(agent, Context(agent.actor), secret_set="openai/prod/default")
    assert isinstance(issued, IssuedLease)

    page = (await ui.get("/ui/credentials/openai/prod/default")).text
    text = "\n".join(panel(page).values())
    for value in (agent_token.reveal(), issued.token.reveal(), CANARY):
        assert value not in page
    # Only placeholders where a token goes: no kfa_/kfl_ followed by token characters.
    assert not re.search(r"kf[al]_[A-Za-z0-9_\-]{8,}", text), text
    assert "kfa_…" in text


async def test_a_set_without_a_profile_says_the_proxy_cannot_use_it(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "acme/prod/stored", {"ACME_TOKEN": CANARY})
    page = await ui.get("/ui/credentials/acme/prod/stored")
    assert "Use it from an agent" in page.text
    assert panel(page.text) == {}
    assert "needs an injection profile" in page.text


async def test_a_deleted_set_has_no_panel(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "openai/prod/default", {"OPENAI_API_KEY": CANARY}, preset="openai")
    await vault.sets.delete(CTX, "openai/prod/default")
    page = await ui.get("/ui/credentials/openai/prod/default")
    assert page.status_code == 200
    assert "Use it from an agent" not in page.text
    assert panel(page.text) == {}
