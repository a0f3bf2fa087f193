"""A thin ``httpx.Client`` over the keyfob HTTP API that turns every failure into a ``CliError``.

Problem+json answers become ``detail (HTTP status type)``, or ``detail (reason: …)`` for a
lease denial; transport failures name the address that did not answer. Nothing here
prints: the CLI's root group does that.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from keyfob import __version__
from keyfob.cli.context import AUTH_HINT
from keyfob.cli.errors import CliError
from keyfob.errors import PROBLEM_PREFIX
from keyfob.secret import Masked, Secret
from keyfob.server_trust import ServerTrust, UnusableTlsFile, certificate_problem
from keyfob.text import digits

Params = Mapping[str, str | int | Sequence[str]]

TIMEOUT_SECONDS = 30.0


class KeyfobClient(Masked):
    """Calls to one keyfob server with one token; every method returns parsed JSON or raises."""

    shown = ("addr",)

    def __init__(
        self,
        addr: str,
        token: Secret[str] | None,
        transport: httpx.BaseTransport | None = None,
        auth_hint: str = AUTH_HINT,
        trust: ServerTrust | None = None,
    ) -> None:
        self.addr = check_addr(addr)
        try:
            verify = (trust or ServerTrust()).verification(self.addr)
        except UnusableTlsFile as exc:
            raise CliError(str(exc)) from None
        self._auth_hint = auth_hint  # what a 401 tells the user to check
        headers = {"User-Agent": f"keyfob-cli/{__version__}", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        # trust_env=False: an HTTP(S)_PROXY in the environment must not see operator tokens.
        self._http = httpx.Client(
            base_url=self.addr,
            headers=headers,
            transport=transport,
            verify=verify,
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Params | None = None) -> dict[str, Any]:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._call("POST", path, body=body)

    def post_status(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST where the success status matters (201 issued vs 202 pending)."""
        return self._call_status("POST", path, body=body)

    def put(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PUT", path, body=body)

    def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", path, body=body)

    def delete(self, path: str) -> dict[str, Any]:
        return self._call("DELETE", path)

    @contextmanager
    def stream(self, path: str) -> Iterator[Iterator[bytes]]:
        """Yield the body of a successful GET chunk by chunk (for exports)."""
        with self._transport_errors():
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise CliError(describe_error(response, self.addr, self._auth_hint))
                yield response.iter_bytes()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self._call_status(method, path, params=params, body=body)[1]

    def _call_status(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        with self._transport_errors():
            response = self._http.request(method, path, params=params, json=body)
        if response.is_error or response.is_redirect:
            raise CliError(describe_error(response, self.addr, self._auth_hint))
        try:
            data = response.json()
        except ValueError:
            raise CliError(
                f"keyfob at {self.addr} answered {method} {path} with something that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise CliError(f"keyfob at {self.addr} answered {method} {path} with unexpected JSON")
        return response.status_code, data

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """Translate httpx's transport exceptions into one line naming the address."""
        try:
            yield
        except httpx.ConnectError as exc:
            problem = certificate_problem(exc)
            if problem is not None:
                raise CliError(
                    f"cannot verify the TLS certificate of keyfob at {self.addr}: {problem}"
                ) from None
            raise CliError(
                f"cannot connect to keyfob at {self.addr} ({_reason(exc)}); "
                "is `keyfob serve` running there? Set KEYFOB_ADDR or --addr"
            ) from None
        except httpx.TimeoutException:
            raise CliError(
                f"keyfob at {self.addr} did not answer within {TIMEOUT_SECONDS:g} seconds"
            ) from None
        except httpx.HTTPError as exc:
            raise CliError(
                f"talking to keyfob at {self.addr} failed ({type(exc).__name__})"
            ) from None


def check_addr(addr: str) -> str:
    """The server address, refused early unless it is an http(s) URL with a host."""
    parts = urlsplit(addr.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"the keyfob address must be an http:// or https:// URL, got {addr!r} "
            "(KEYFOB_ADDR or --addr)"
        )
    return addr.strip().rstrip("/")


def sends_token_in_clear(addr: str) -> bool:
    """Whether a token would cross a network unencrypted (plain http to a non-loopback host)."""
    parts = urlsplit(addr)
    if parts.scheme != "http" or parts.hostname is None:
        return False
    if parts.hostname == "localhost":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return True


def describe_error(response: httpx.Response, addr: str, auth_hint: str = AUTH_HINT) -> str:
    """One line for a failed answer: the problem's detail and type (or denial reason)."""
    status = response.status_code
    if response.is_redirect:
        return f"keyfob at {addr} answered with a redirect (HTTP {status}); check KEYFOB_ADDR"
    problem = _problem(response)
    if problem is None:
        return f"keyfob at {addr} answered HTTP {status} {response.reason_phrase}".rstrip()
    slug = str(problem.get("type", "")).removeprefix(PROBLEM_PREFIX) or "error"
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    parts = [detail]
    # The server's detail often summarises the field errors already; add only what it lacks.
    missing = [item for item in _field_errors(problem.get("errors")) if item not in detail]
    if missing:
        parts.append(": " + "; ".join(missing))
    if status == 401:
        parts.append(f"; {auth_hint}")
    if status >= 500 and problem.get("request_id"):
        parts.append(f"; request id {problem['request_id']}")
    reason = problem.get("reason")
    if isinstance(reason, str) and reason:
        # A lease denial: the reason is the stable part scripts match on.
        retry = response.headers.get("retry-after")
        if retry and digits(retry, 9):
            parts.append(f"; retry in {retry} s")
        parts.append(f" (reason: {reason})")
    else:
        parts.append(f" (HTTP {status} {slug})")
    return "".join(parts)


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    content_type = response.headers.get("content-type", "")
    if "json" not in content_type:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _field_errors(errors: object) -> list[str]:
    """``loc: msg`` for each invalid field; the server never echoes submitted values."""
    if not isinstance(errors, list):
        return []
    described = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        loc = error.get("loc") or []
        names = [str(part) for part in loc if part != "body"] if isinstance(loc, list) else []
        where = ".".join(names) or "request"
        described.append(f"{where}: {error.get('msg', 'invalid')}")
    return described


def _reason(exc: httpx.ConnectError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return str(exc) or "connection failed"
