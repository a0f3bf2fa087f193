"""The wire to one keyfob server: JSON in and out, every failure a typed exception, sync
(``Wire``) and async (``AsyncWire``) over the same request and answer handling.

``trust_env=False``: an ``HTTP(S)_PROXY`` in the environment must never see an agent
token or a lease. ``transport`` is httpx's, so tests hand in the app in-process.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from keyfob import __version__
from keyfob.sdk.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ServerError,
    from_response,
    unreachable,
)
from keyfob.secret import Masked, Secret
from keyfob.server_trust import FilePath, ServerTrust, UnusableTlsFile

DEFAULT_ADDR = "http://127.0.0.1:8200"
TIMEOUT = 30.0
Params = Mapping[str, str | int | float]


def resolve_addr(addr: str | None) -> str:
    """``addr``, else ``KEYFOB_ADDR``, else the local default; an http(s) URL with a host."""
    chosen = (addr or os.environ.get("KEYFOB_ADDR") or DEFAULT_ADDR).strip()
    parts = urlsplit(chosen)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            "the keyfob address must be an http:// or https:// URL (addr= or KEYFOB_ADDR)"
        )
    return chosen.rstrip("/")


def resolve_token(token: str | None) -> Secret[str] | None:
    """``token``, else ``KEYFOB_TOKEN``; None when neither is set."""
    chosen = token if token is not None else os.environ.get("KEYFOB_TOKEN")
    return Secret(chosen.strip()) if chosen and chosen.strip() else None


def resolve_trust(
    ca_file: FilePath | None, client_cert: FilePath | None, client_key: FilePath | None
) -> ServerTrust:
    """The files a client checks keyfob with and presents to it: these arguments, else
    ``KEYFOB_CA_FILE`` and ``KEYFOB_CLIENT_CERT``/``_KEY``; see ``keyfob.server_trust``."""
    return ServerTrust.from_environ(ca_file=ca_file, client_cert=client_cert, client_key=client_key)


def resolve_verification(addr: str, trust: ServerTrust) -> ssl.SSLContext | bool:
    """How ``addr``'s certificate is checked (``trust``'s CA file, else httpx's CA
    bundle), with the client certificate ``trust`` names."""
    try:
        return trust.verification(addr)
    except UnusableTlsFile as exc:
        raise InvalidRequest(str(exc)) from None


def segment(value: str) -> str:
    """An id as one URL path segment (a ``/`` or ``..`` cannot steer the call elsewhere)."""
    return quote(value, safe="")


class _Base(Masked):
    shown = ("addr",)

    def __init__(
        self, addr: str | None, token: str | None, what: str, trust: ServerTrust | None = None
    ) -> None:
        self.addr = resolve_addr(addr)
        self.trust = trust if trust is not None else ServerTrust.from_environ()
        self.verify = resolve_verification(self.addr, self.trust)  # for clients of the server
        self._token = resolve_token(token)
        self._what = what  # "an agent token (kfa_…)" for the message when it is missing
        self._headers = {"User-Agent": f"keyfob-sdk/{__version__}", "Accept": "application/json"}

    @property
    def token(self) -> str | None:
        """The token, for a twin client of the same server (sync to async)."""
        return self._token.reveal() if self._token is not None else None

    def _auth(self, bearer: Secret[str] | None) -> dict[str, str]:
        chosen = bearer if bearer is not None else self._token
        if chosen is None:
            raise AuthenticationFailed(f"no token: pass token= or set KEYFOB_TOKEN to {self._what}")
        return {"Authorization": f"Bearer {chosen.reveal()}"}

    def _answer(self, response: httpx.Response) -> tuple[int, dict[str, Any]]:
        if response.is_error or response.is_redirect:
            raise from_response(response)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ServerError(
                f"keyfob at {self.addr} answered with something that is not a JSON object",
                status=response.status_code,
            )
        return response.status_code, data


class Wire(_Base):
    """Synchronous calls to one keyfob server."""

    def __init__(
        self,
        addr: str | None,
        token: str | None,
        what: str,
        transport: httpx.BaseTransport | None = None,
        timeout: float = TIMEOUT,
        trust: ServerTrust | None = None,
    ) -> None:
        super().__init__(addr, token, what, trust)
        self.http = httpx.Client(
            base_url=self.addr,
            headers=self._headers,
            transport=transport,
            verify=self.verify,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Params | None = None,
        bearer: Secret[str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """``(status, JSON object)`` of a successful answer; a typed exception otherwise."""
        headers = self._auth(bearer)
        try:
            response = self.http.request(method, path, json=body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise unreachable(self.addr, exc) from None
        return self._answer(response)

    def close(self) -> None:
        self.http.close()


class AsyncWire(_Base):
    """Asynchronous calls to one keyfob server."""

    def __init__(
        self,
        addr: str | None,
        token: str | None,
        what: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = TIMEOUT,
        trust: ServerTrust | None = None,
    ) -> None:
        super().__init__(addr, token, what, trust)
        self.http = httpx.AsyncClient(
            base_url=self.addr,
            headers=self._headers,
            transport=transport,
            verify=self.verify,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Params | None = None,
        bearer: Secret[str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = self._auth(bearer)
        try:
            response = await self.http.request(
                method, path, json=body, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise unreachable(self.addr, exc) from None
        return self._answer(response)

    async def aclose(self) -> None:
        await self.http.aclose()
