"""``POST /v1/leases`` as a plain ASGI route: the mint an agent makes before each call.

A single mint was mostly FastAPI (middleware, routing, dependency solving, response
rendering) around a grouped commit. This route answers the common case without it: an
agent token, a JSON body of known length that ``LeaseMint`` accepts, one set. It calls
``api.leases.minted`` — the same vault call and answer as the FastAPI route — and sends
the same headers ``ApiMiddleware`` adds. Anything else (another kind of token, a body
that does not validate, a multi-set lease, a chunked or oversized body) goes to the
FastAPI app with the body replayed, so every refusal keeps its one renderer.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyfob import tokens
from keyfob.api.leases import minted
from keyfob.api.middleware import API_HEADERS, log_unhandled, with_api_headers
from keyfob.api.models import LeaseMint
from keyfob.api.problems import render
from keyfob.errors import KeyfobError
from keyfob.tls_scope import client_certificate
from keyfob.vault import Vault, new_request_id
from keyfob.vault.context import Context
from keyfob.vault.leases import AgentClaim

PATH = "/v1/leases"
_JSON = b"application/json"


class MintRoute:
    """Answers ``POST /v1/leases`` for an agent token; hands everything else to ``api``."""

    def __init__(self, api: ASGIApp, vault: Callable[[], Vault], max_body: int) -> None:
        self._api = api
        self._vault = vault
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self._agent_token(scope)
        if token is None:
            await self._api(scope, receive, send)
            return
        messages: list[Message] = []
        pieces: list[bytes] = []
        read = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            piece = message.get("body", b"")
            pieces.append(piece)
            read += len(piece)
            if read > self._max_body:
                # More than it said (a server that let a chunked body past a small
                # Content-Length): FastAPI's counting receive answers 413 for the rest.
                await self._api(scope, _replay(messages, receive), send)
                return
            if not message.get("more_body", False):
                break
        body = None
        if messages[-1]["type"] == "http.request":
            try:
                body = LeaseMint.model_validate_json(b"".join(pieces))
            except ValidationError:
                body = None
        if body is None or body.secret_sets is not None or body.secret_set is None:
            await self._api(scope, _replay(messages, receive), send)
            return
        await self._mint(scope, receive, send, token, body)

    def _agent_token(self, scope: Scope) -> str | None:
        """The agent token of a request this route answers, or None (FastAPI answers)."""
        auth = ctype = length = None
        for name, value in scope["headers"]:
            # The first of each, as Starlette's ``headers[...]`` reads them (deps.bearer).
            if name == b"authorization" and auth is None:
                auth = value
            elif name == b"content-type" and ctype is None:
                ctype = value
            elif name == b"content-length":
                if length is not None:
                    return None  # two lengths: FastAPI's checks refuse it
                length = value
        if auth is None or ctype is None or length is None:
            return None
        if ctype.split(b";", 1)[0].strip().lower() != _JSON:
            return None
        if not length.isdigit() or int(length) > self._max_body:
            return None
        scheme, _, raw = auth.decode("latin-1").partition(" ")
        token: str = raw.strip()
        if scheme.lower() != "bearer" or not tokens.looks_like(token, tokens.AGENT):
            return None
        return token

    async def _mint(
        self, scope: Scope, receive: Receive, send: Send, token: str, body: LeaseMint
    ) -> None:
        rid = new_request_id()
        vault: Vault = self._vault()
        client = scope.get("client")
        ctx = Context(
            actor="anonymous",
            request_id=rid,
            client=client[0] if client else None,
            client_cert=client_certificate(scope),
        )
        claim = AgentClaim(tokens.digest(vault.core.ring.system.token_key, token))
        try:
            content, status = await minted(vault, body, claim, ctx)
        except KeyfobError as error:
            await render(error, rid)(scope, receive, with_api_headers(send, rid))
            return
        except Exception as exc:
            log_unhandled(exc, rid)
            failed = KeyfobError("unexpected server error; see the server log")
            await render(failed, rid)(scope, receive, with_api_headers(send, rid))
            return
        headers = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", _JSON),
            (b"x-request-id", rid.encode()),
            *API_HEADERS,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that hands out the messages already read, then reads on."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
