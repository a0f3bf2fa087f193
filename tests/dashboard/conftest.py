"""Dashboard fixtures: a signed-in browser-like client (cookies kept) over the app in-process."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from keyfob.app import create_app
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Context, Vault

USER = "alice"
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match, "no form with a csrf field on this page"
    return match.group(1)


@dataclass
class Ui:
    """A signed-in user's client; ``post`` fills in the page's CSRF token."""

    http: httpx.AsyncClient
    user_id: str

    async def get(self, url: str) -> httpx.Response:
        return await self.http.get(url)

    async def post(self, url: str, data: dict[str, str], *, form_page: str) -> httpx.Response:
        token = csrf_of((await self.http.get(form_page)).text)
        return await self.http.post(url, data={**data, "csrf": token})


async def sign_in(
    http: httpx.AsyncClient, name: str = USER, password: str = PASSWORD
) -> httpx.Response:
    form = await http.get("/ui/login")
    return await http.post(
        "/ui/login", data={"csrf": csrf_of(form.text), "name": name, "password": password}
    )


@pytest.fixture
async def ui(vault: Vault, settings: Settings) -> AsyncIterator[Ui]:
    user = await vault.users.create(Context("operator:test"), USER, Secret(PASSWORD))
    app = create_app(settings, vault=vault)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keyfob.test"
    ) as http:
        answer = await sign_in(http)
        assert answer.status_code == 303, answer.text
        yield Ui(http, user["id"])
