"""A fake OAuth 2.0 authorization server and resource API on loopback, in a thread.

Serves:

- ``GET /authorize`` (authorization code + PKCE S256 + state): approves at once and
  redirects to ``redirect_uri?code=…&state=…``.
- ``POST /token``: ``authorization_code`` (checks the PKCE verifier and redirect URI),
  ``refresh_token`` (rotates when ``rotate``; every refresh token is single use, and a
  second use is recorded in ``reused`` and answered ``invalid_grant``),
  ``client_credentials`` and the JWT-bearer grant (verifies the assertion's RS256
  signature against the registered service account's public key, its ``aud`` and times;
  with ``clock_behind`` set, an ``iat`` in this server's future is refused, as Google does).
- ``POST /app/installations/{id}/access_tokens``: a GitHub-App-style installation token
  for a Bearer app JWT verified against the registered app key.
- ``ANY /api/…``: 200 with ``{"ok": true, "token": n}`` (which access token it was) for a
  live access token, 401 otherwise.

``uses`` counts every use of each refresh token; ``reused`` must stay empty.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.upstream import _Loop

CLIENT_ID = "client-1"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_counter = itertools.count(1)


def rsa_pem() -> tuple[str, str]:
    """A fresh RSA key: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@dataclass
class FakeAuthServer:
    host: str = "127.0.0.1"
    port: int = 0
    client_secret: str = field(default_factory=lambda: "cs-canary-" + secrets.token_hex(12))
    rotate: bool = True
    lifetime: int = 3600
    delay: float = 0.0
    fail_next: int = 0
    clock_behind: float = 0.0  # seconds this server's clock runs behind keyfob's
    uses: Counter[str] = field(default_factory=Counter)
    reused: list[str] = field(default_factory=list)
    refreshes: int = 0
    token_calls: int = 0
    api_calls: int = 0
    # Called (in a thread) before a dead refresh token is answered ``invalid_grant``:
    # a test's stand-in for another node that rotated the set meanwhile.
    on_dead_refresh: Callable[[], None] | None = None
    api_bodies: list[bytes] = field(default_factory=list)
    refresh_tokens: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)  # every refresh token, dead or alive
    access: dict[str, tuple[int, float]] = field(default_factory=dict)
    sa_keys: dict[str, str] = field(default_factory=dict)  # client_email -> public PEM
    app_keys: dict[str, str] = field(default_factory=dict)  # app id -> public PEM
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    def start(self) -> FakeAuthServer:
        self._loop = _Loop()
        self._runner = self._loop.run(self._start())
        return self

    def stop(self) -> None:
        self._loop.run(self._runner.cleanup())
        self._loop.stop()

    # -- what tests set up ---------------------------------------------------------------

    def new_refresh_token(self) -> str:
        token = f"rt-canary-{next(_counter)}-{secrets.token_hex(12)}"
        with self._lock:
            self.refresh_tokens.add(token)
            self.issued.append(token)
        return token

    def revoke_all(self) -> None:
        with self._lock:
            self.refresh_tokens.clear()

    def expire_access(self) -> None:
        with self._lock:
            self.access = {k: (n, 0.0) for k, (n, _) in self.access.items()}

    def service_account(self, email: str = "bot@project.iam.gserviceaccount.com") -> dict[str, str]:
        private, public = rsa_pem()
        self.sa_keys[email] = public
        return {
            "type": "service_account",
            "project_id": "project",
            "private_key_id": "kid-1",
            "private_key": private,
            "client_email": email,
            "client_id": "1234",
            "token_uri": self.token_url,
        }

    def github_app(self, app_id: str = "4242") -> str:
        private, public = rsa_pem()
        self.app_keys[app_id] = public
        return private

    # -- the server ----------------------------------------------------------------------

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_post("/app/installations/{id}/access_tokens", self._installation)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner

    def _issue(self, refresh: bool = False) -> dict[str, Any]:
        with self._lock:
            n = len(self.access) + 1
            token = f"at-canary-{n}-{secrets.token_hex(12)}"
            self.access[token] = (n, time.time() + self.lifetime)
            body: dict[str, Any] = {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.lifetime,
            }
            if refresh:
                fresh = f"rt-canary-{next(_counter)}-{secrets.token_hex(12)}"
                self.refresh_tokens.add(fresh)
                self.issued.append(fresh)
                body["refresh_token"] = fresh
        return body

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_hex(16)
        self.codes[code] = {
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
            "client_id": q["client_id"],
        }
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
        raise web.HTTPFound(target)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        with self._lock:
            self.token_calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        grant = form.get("grant_type")
        if grant == JWT_BEARER:
            return self._jwt_bearer(str(form.get("assertion", "")))
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != self.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        if grant == "client_credentials":
            return web.json_response(self._issue())
        if grant == "authorization_code":
            code = self.codes.pop(str(form.get("code")), None)
            verifier = str(form.get("code_verifier", ""))
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if (
                code is None
                or code["challenge"] != challenge
                or code["redirect_uri"] != form.get("redirect_uri")
            ):
                return web.json_response({"error": "invalid_grant"}, status=400)
            return web.json_response(self._issue(refresh=True))
        if grant == "refresh_token":
            token = str(form.get("refresh_token"))
            with self._lock:
                self.uses[token] += 1
                if self.uses[token] > 1 and self.rotate:
                    self.reused.append(token)
                live = token in self.refresh_tokens
                if live and self.rotate:
                    self.refresh_tokens.discard(token)
                if live:
                    self.refreshes += 1
            if not live:
                if self.on_dead_refresh is not None:
                    hook, self.on_dead_refresh = self.on_dead_refresh, None
                    await asyncio.to_thread(hook)
                return web.json_response({"error": "invalid_grant"}, status=400)
            return web.json_response(self._issue(refresh=self.rotate))
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    def _jwt_bearer(self, assertion: str) -> web.Response:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            public = self.sa_keys[unverified["iss"]]
            jwt.decode(
                assertion,
                public,
                algorithms=["RS256"],
                audience=self.token_url,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
            claims = jwt.decode(assertion, options={"verify_signature": False})
            if claims["iat"] > time.time() - self.clock_behind:
                raise jwt.ImmatureSignatureError("iat is in this server's future")
            if claims["exp"] - claims["iat"] > 3600:
                raise jwt.InvalidTokenError("an assertion lives at most an hour")
        except (jwt.PyJWTError, KeyError):
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response(self._issue())

    async def _installation(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        try:
            unverified = jwt.decode(
                auth.removeprefix("Bearer "), options={"verify_signature": False}
            )
            public = self.app_keys[str(unverified["iss"])]
            claims = jwt.decode(auth.removeprefix("Bearer "), public, algorithms=["RS256"])
            if claims["iat"] > time.time() - self.clock_behind:
                raise jwt.ImmatureSignatureError("iat is in this server's future")
        except (jwt.PyJWTError, KeyError):
            return web.json_response({"message": "Bad credentials"}, status=401)
        body = self._issue()
        expires = datetime.now(UTC) + timedelta(seconds=self.lifetime)
        return web.json_response(
            {"token": body["access_token"], "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
            status=201,
        )

    async def _api(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        body = await request.read()
        with self._lock:
            self.api_calls += 1
            self.api_bodies.append(body)
            found = self.access.get(token)
        if found is None or found[1] < time.time():
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"ok": True, "token": found[0]})
