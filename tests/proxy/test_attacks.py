"""Attacks on the proxy: each leaves the attacker's listener idle and the canary unseen.

Every test checks the same two things besides its own status: the ``Listener`` (where an
attacker wants the credential to go) got no connection, and the canary shows up in no
form in what the agent got back (status line, headers, body), in the server log or in the
audit (each test reads the events written since the previous one; the last test searches
the whole export). Request bytes an HTTP client would repair (``..``, bad framing) are
written on a raw socket.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from tests.conftest import CANARY
from tests.proxy.factories import BEARER, Proxied, audit, local_profile, proxied, unique
from tests.support.http import PROBLEM_JSON, assert_problem
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream, Listener, Seen
from tests.test_leak import leaks

USER = "acct-user-5e6f7a8b9c0d"
ACCESS_KEY = "AKIACANARY7F3A9C1E5B"
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "proxy-authorization", "cookie")

# One set per injection kind: (inject spec, entries). The canary is the value that must
# never be seen; for SigV4 it is the secret key, which never goes on the wire at all.
KINDS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "bearer": (BEARER, {"API_KEY": CANARY}),
    "header": (
        {"kind": "header", "name": "x-api-key", "template": "{API_KEY}"},
        {"API_KEY": CANARY},
    ),
    "basic": (
        {"kind": "basic", "username": "{API_USER}", "password": "{API_KEY}"},
        {"API_USER": USER, "API_KEY": CANARY},
    ),
    "query": ({"kind": "query", "param": "key", "key": "API_KEY"}, {"API_KEY": CANARY}),
    "aws_sigv4": (
        {"kind": "aws_sigv4", "region": "us-east-1", "service": "s3"},
        {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": CANARY},
    ),
}
BASIC = base64.b64encode(f"{USER}:{CANARY}".encode()).decode()


@pytest.fixture(scope="module")
def agent() -> Iterator[httpx.Client]:
    """The agent's HTTP client: keeps its connections, follows no redirect."""
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        yield client


def mint(agent: httpx.Client, p: Proxied, scope: str = "workflow") -> str:
    """A fresh lease for ``p`` (workflow by default, so a test can make several calls)."""
    answer = agent.post(
        f"{p.server_url}/v1/leases",
        json={"secret_set": p.set_path, "scope": scope},
        headers={"Authorization": f"Bearer {p.agent_token}"},
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


@pytest.fixture(scope="module")
def sets(operator: httpx.Client, upstream: FakeUpstream) -> dict[str, Proxied]:
    """A set of each injection kind on the fake upstream."""
    return {
        kind: proxied(operator, local_profile(upstream, inject=spec), entries)
        for kind, (spec, entries) in KINDS.items()
    }


# -- evidence ------------------------------------------------------------------------------


def shown(response: httpx.Response) -> bytes:
    """Everything an agent sees of a response: status line, headers and body."""
    head = f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in response.headers.multi_items())
    return head.encode("latin-1") + b"\r\n" + response.read()


def assert_unseen(
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    before: int,
    needles: tuple[str, ...] = (CANARY,),
    **seen: bytes,
) -> None:
    """The listener got no connection and no needle is in ``seen``, the log or the audit."""
    # Had keyfob connected to the listener, it would have done so before answering (the
    # listener never answers); give the listener's accept thread a moment to count it.
    time.sleep(0.02)
    assert listener.connections == before, "keyfob connected to the attacker's listener"
    haystacks = {**seen, "server log": server.log_text().encode(), "audit": new_audit(operator)}
    assert leaks(list(needles), haystacks) == []


_audit_read: dict[str, int] = {}


def new_audit(operator: httpx.Client) -> bytes:
    """The audit events written since the last call, as JSON lines. (Reading only the new ones
    keeps each test fast; the last test of the module searches the whole export.)"""
    key = str(operator.base_url)
    after = _audit_read.get(key, 0)
    lines = []
    while True:
        page = operator.get("/v1/audit", params={"after": after, "limit": 1000})
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        lines.extend(json.dumps(item) for item in items)
        if items:
            after = items[-1]["seq"]
        if len(items) < 1000:
            break
    _audit_read[key] = after
    return "\n".join(lines).encode()


@dataclass
class Raw:
    """A response read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    whole: bytes


def raw_http(server: LiveServer, data: bytes) -> Raw:
    """Write ``data`` to the server as is and read the answer until the server closes."""
    address = urlsplit(server.url)
    assert address.hostname is not None
    assert address.port is not None
    chunks = []
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # some refusals close hard; what arrived before still counts
    whole = b"".join(chunks)
    head, _, body = whole.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), whole[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Raw(int(lines[0].split()[1]), headers, body, whole)


def request_bytes(
    server: LiveServer, target: str, lease: str, extra: str = "", body: bytes = b"", method="GET"
) -> bytes:
    """An HTTP/1.1 request to ``target`` with the lease, ``extra`` header lines (each ending
    in CRLF) and ``Connection: close``."""
    authority = urlsplit(server.url).netloc
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\nX-Keyfob-Lease: {lease}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def assert_refused_raw(answer: Raw) -> None:
    """A 4xx: keyfob's problem+json, or the HTTP parser's own 400 for bytes it cannot read."""
    assert 400 <= answer.status < 500, answer.whole[:300]
    if answer.headers.get("content-type", "").startswith(PROBLEM_JSON):
        assert json.loads(answer.body)["type"].startswith("urn:keyfob:problem:")
    else:
        assert answer.status == 400, answer.whole[:300]


def assert_lease_unused(agent: httpx.Client, p: Proxied, lease: str) -> None:
    """A single-use lease still works once (and only once): the refusal did not consume it."""
    first = agent.get(p.url("/echo/after"), headers={"X-Keyfob-Lease": lease}, timeout=10)
    assert first.status_code == 200, first.text
    again = agent.get(p.url("/echo/after"), headers={"X-Keyfob-Lease": lease}, timeout=10)
    assert again.status_code in (401, 403), again.text


def seen_at(upstream: FakeUpstream, marker: str) -> Seen:
    """The one request the upstream got whose path holds ``marker``."""
    matches = [s for s in upstream.seen if marker in s.path]
    assert len(matches) == 1, [s.path for s in upstream.seen]
    return matches[0]


def header_values(seen: Seen, name: str) -> list[str]:
    return [v for k, v in seen.headers if k.lower() == name]


def wire(seen: Seen) -> bytes:
    """Everything the upstream received, as one blob."""
    head = f"{seen.method} {seen.path}?{seen.query}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in seen.headers)
    return head.encode("latin-1") + b"\r\n" + seen.body


# -- 1. destinations an operator may not configure ----------------------------------------

BAD_PROFILES: dict[str, dict[str, Any]] = {
    "userinfo-lookalike": {"base_url": "https://api.openai.com@evil.example/"},
    "userinfo-lookalike-evil-allowed": {
        "base_url": "https://api.openai.com@evil.example/",
        "hosts": ["evil.example"],
    },
    "userinfo-user-password": {
        "base_url": "https://user:pw@api.example.com",
        "hosts": ["api.example.com"],
    },
    "userinfo-port-lookalike": {"base_url": "https://api.openai.com:443@evil.example/"},
    "userinfo-backslash": {"base_url": "https://api.openai.com\\@evil.example/"},
    "fragment-lookalike": {"base_url": "https://evil.example#@api.openai.com"},
    "suffix-lookalike": {"base_url": "https://api.openai.com.evil.example/"},
    "cyrillic-lookalike": {"base_url": "https://\u0430pi.openai.com/"},
    "preset-base-url-elsewhere": {"preset": "openai", "base_url": "https://evil.example/"},
    "hosts-short-ipv4": {
        "base_url": "https://api.example.com",
        "hosts": ["api.example.com", "127.1"],
    },
    "short-ipv4": {"base_url": "https://127.1/", "hosts": ["127.1"]},
    "hex-ipv4": {"base_url": "https://0x7f000001/", "hosts": ["0x7f000001"]},
    "decimal-ipv4": {"base_url": "https://2130706433/", "hosts": ["2130706433"]},
    "octal-ipv4": {"base_url": "https://0177.0.0.1/", "hosts": ["0177.0.0.1"]},
    "hex-dotted-ipv4": {"base_url": "https://0x7f.0.0.1/", "hosts": ["0x7f.0.0.1"]},
    "mapped-ipv6": {"base_url": "https://[::ffff:127.0.0.1]/", "hosts": ["::ffff:127.0.0.1"]},
    "mapped-ipv6-hex": {"base_url": "https://[::ffff:7f00:1]/", "hosts": ["::ffff:7f00:1"]},
    "zone-id": {"base_url": "https://[fe80::1%25eth0]/", "hosts": ["fe80::1%eth0"]},
    "metadata": {"base_url": "https://169.254.169.254/", "hosts": ["169.254.169.254"]},
    "private": {"base_url": "https://10.0.0.1/", "hosts": ["10.0.0.1"]},
    "loopback-ipv6": {"base_url": "https://[::1]/", "hosts": ["::1"]},
    "unspecified": {"base_url": "https://0.0.0.0/", "hosts": ["0.0.0.0"]},
    "localhost": {"base_url": "https://localhost/", "hosts": ["localhost"]},
    "sub-localhost": {"base_url": "https://api.localhost/", "hosts": ["api.localhost"]},
    "plain-http": {"base_url": "http://api.example.com/", "hosts": ["api.example.com"]},
    "bad-port": {"base_url": "https://api.example.com:99999/", "hosts": ["api.example.com"]},
}
# Ambiguous forms are refused even when private upstreams are allowed: no one can say
# which address the operator meant.
AMBIGUOUS_EVEN_IF_PRIVATE = [
    "hosts-short-ipv4",
    "short-ipv4",
    "hex-ipv4",
    "decimal-ipv4",
    "octal-ipv4",
    "hex-dotted-ipv4",
    "zone-id",
]


def _bad_profile(case: str, allow_private: bool) -> dict[str, Any]:
    spec = BAD_PROFILES[case]
    if "preset" in spec:
        return dict(spec)
    profile = {"hosts": ["api.openai.com"], "inject": BEARER, **spec}
    if allow_private:
        profile["allow_private_upstream"] = True
    return profile


def _refuse_profile(
    operator: httpx.Client, server: LiveServer, listener: Listener, profile: dict[str, Any]
) -> None:
    before = listener.connections
    name = unique("bad")
    body = {
        "provider": "generic",
        "environment": "test",
        "name": name,
        "entries": {"API_KEY": CANARY},
        "profile": profile,
    }
    answer = operator.post("/v1/secret-sets", json=body)
    problem = assert_problem(answer, 422, "validation-failed")
    assert [e["loc"][0] for e in problem["errors"]] == ["profile"], problem
    assert operator.get(f"/v1/secret-sets/generic/test/{name}").status_code == 404
    assert_unseen(server, operator, listener, before, refusal=shown(answer))


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_an_operator_cannot_point_a_set_at_an_ambiguous_or_private_destination(
    operator: httpx.Client, server: LiveServer, listener: Listener, case: str
) -> None:
    """Userinfo, lookalikes, odd IP forms and private literals: 422 and no set made."""
    _refuse_profile(operator, server, listener, _bad_profile(case, allow_private=False))


@pytest.mark.parametrize("case", AMBIGUOUS_EVEN_IF_PRIVATE)
def test_ambiguous_address_forms_are_refused_even_with_private_upstreams_allowed(
    operator: httpx.Client, server: LiveServer, listener: Listener, case: str
) -> None:
    """``allow_private_upstream`` does not make ``127.1`` or a zone id mean one address."""
    _refuse_profile(operator, server, listener, _bad_profile(case, allow_private=True))


@pytest.mark.parametrize("case", ["userinfo-lookalike-evil-allowed", "suffix-lookalike", "private"])
def test_an_existing_set_cannot_be_repointed_either(
    upstream: FakeUpstream,
    operator: httpx.Client,
    server: LiveServer,
    listener: Listener,
    case: str,
) -> None:
    """A PATCH with a bad profile is refused the same way and leaves the set as it was."""
    p = proxied(operator, local_profile(upstream))
    before = listener.connections
    url = f"/v1/secret-sets/{p.set_path}"
    was = operator.get(url).json()
    answer = operator.patch(url, json={"profile": _bad_profile(case, allow_private=False)})
    problem = assert_problem(answer, 422, "validation-failed")
    assert [e["loc"][0] for e in problem["errors"]] == ["profile"], problem
    now = operator.get(url).json()
    assert (now["version"], now["profile"]) == (was["version"], was["profile"])
    assert_unseen(server, operator, listener, before, refusal=shown(answer))


def test_a_metadata_address_is_never_contacted_even_with_private_upstreams_allowed(
    agent: httpx.Client, operator: httpx.Client, server: LiveServer, listener: Listener
) -> None:
    """The flag lets tests reach loopback, not the cloud metadata service."""
    before = listener.connections
    profile = {
        "base_url": "http://169.254.169.254/latest",
        "hosts": ["169.254.169.254"],
        "inject": BEARER,
        "allow_private_upstream": True,
    }
    name = unique("meta")
    body = {
        "provider": "generic",
        "environment": "test",
        "name": name,
        "entries": {"API_KEY": CANARY},
        "profile": profile,
    }
    created = operator.post("/v1/secret-sets", json=body)
    seen = {"create": shown(created)}
    if created.status_code != 422:
        # Accepted as configuration; then the socket must still refuse it.
        assert created.status_code == 201, created.text
        bot = operator.post("/v1/agents", json={"name": unique("agent")}).json()
        set_path = f"generic/test/{name}"
        granted = operator.post("/v1/grants", json={"agent": bot["name"], "secret_set": set_path})
        assert granted.status_code == 201, granted.text
        lease = agent.post(
            f"{server.url}/v1/leases",
            json={"secret_set": set_path},
            headers={"Authorization": f"Bearer {bot['token']}"},
        ).json()["token"]
        answer = agent.get(
            f"{server.url}/proxy/{set_path}/meta-data/iam",
            headers={"X-Keyfob-Lease": lease},
            timeout=10,
        )
        problem = assert_problem(answer, 502, "bad-gateway")
        assert problem["reason"] == "destination_refused"
        assert problem["address_class"] == "metadata"
        seen["proxy"] = shown(answer)
    assert_unseen(server, operator, listener, before, **seen)


# -- 2. redirects are handed back, never followed -------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_redirect_to_another_host_goes_back_to_the_agent_unfollowed(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
    kind: str,
) -> None:
    """301/302/303/307/308 to the listener reach the agent as they are; keyfob follows none."""
    p = sets[kind]
    before = listener.connections
    lease = mint(agent, p)
    seen = {}
    for status in (301, 302, 303, 307, 308):
        method = "POST" if status in (307, 308) else "GET"
        to = f"{listener.url}/steal?status={status}"
        answer = agent.request(
            method,
            p.url("/redirect"),
            params={"to": to, "status": status},
            headers={"X-Keyfob-Lease": lease},
            content=b'{"prompt": "hello"}' if method == "POST" else None,
        )
        assert answer.status_code == status, answer.text
        assert answer.headers["location"] == to
        assert "authorization" not in answer.headers
        seen[f"{status}"] = shown(answer)
    assert upstream.count("/redirect") >= 5
    assert_unseen(server, operator, listener, before, tuple(KINDS[kind][1].values()), **seen)


def test_a_protocol_relative_redirect_is_not_followed_either(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
) -> None:
    """``Location: //listener/steal`` is the agent's to follow, not keyfob's."""
    p = sets["bearer"]
    before = listener.connections
    to = f"//{listener.host}:{listener.port}/steal"
    answer = agent.get(
        p.url("/redirect"),
        params={"to": to},
        headers={"X-Keyfob-Lease": mint(agent, p)},
        follow_redirects=False,
    )
    assert answer.status_code == 302
    assert answer.headers["location"] == to
    assert_unseen(server, operator, listener, before, redirect=shown(answer))


# -- 3. path escapes --------------------------------------------------------------------------

PATH_ESCAPES = {
    "dot-dot-to-the-api": "/../../v1/leases",
    "dot-dot-inside": "/echo/../../../v1/leases",
    "encoded-dot-dot": "/%2e%2e/%2e%2e/v1/leases",
    "mixed-encoded-dot-dot": "/.%2E/x",
    "single-dot": "/./echo",
    "encoded-slash": "/a%2fb",
    "encoded-slash-upper": "/echo%2F..%2F..%2Fv1",
    "encoded-backslash": "/a%5cb",
    "backslash": "/a\\b",
    "double-slash-host": "//{listener}/x",
    "tomcat-dot-dot": "/..;/x",
    "tomcat-dot-dot-param": "/echo/..;jsessionid=1/x",
    "encoded-nul": "/echo%00.json",
    "encoded-newline": "/echo%0d%0aHost:%20evil",
    "bad-percent": "/echo%zz",
    "non-ascii": "/\u00e9cho",
    "space": "/echo x",
    "over-long": "/" + "a" * 5000,
}


@pytest.mark.parametrize("case", sorted(PATH_ESCAPES))
def test_a_path_escape_is_refused_before_the_lease_is_used(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
    case: str,
) -> None:
    """``..``, encoded slashes, ``//host`` and friends: 4xx, no upstream call, lease intact."""
    p = sets["bearer"]
    lease = mint(agent, p, "request")
    before, upstream_before = listener.connections, len(upstream.seen)
    rest = PATH_ESCAPES[case].replace("{listener}", f"{listener.host}:{listener.port}")
    target = f"/proxy/{p.set_path}{rest}"
    answer = raw_http(server, request_bytes(server, target, lease))
    assert_refused_raw(answer)
    if answer.headers.get("content-type", "").startswith(PROBLEM_JSON):
        assert answer.status == 400
        assert json.loads(answer.body)["type"] == "urn:keyfob:problem:invalid-request"
    assert len(upstream.seen) == upstream_before, upstream.seen[upstream_before:]
    assert_unseen(server, operator, listener, before, answer=answer.whole)
    assert_lease_unused(agent, p, lease)


# -- 4. CRLF injection and request smuggling -------------------------------------------------

FRAMINGS: dict[str, tuple[str, bytes, str]] = {
    # name: (extra header lines, body, method)
    "cr-lf-in-value": ("X-Note: a\r\r\nX-Injected: 1\r\n", b"", "GET"),
    "bare-cr-in-value": ("X-Note: a\rX-Injected: 1\r\n", b"", "GET"),
    "nul-in-value": ("X-Note: a\x00b\r\n", b"", "GET"),
    "nul-in-name": ("X-No\x00te: a\r\n", b"", "GET"),
    "space-before-colon": ("X-Note : a\r\n", b"", "GET"),
    "length-and-chunked": (
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\nGET /steal HTTP/1.1\r\n\r\n",
        "POST",
    ),
    "two-lengths": ("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!", "POST"),
    "length-list": ("Content-Length: 5, 6\r\n", b"hello!", "POST"),
    "signed-length": ("Content-Length: +5\r\n", b"hello", "POST"),
    "te-gzip": ("Transfer-Encoding: gzip\r\n", b"", "POST"),
    "te-chunked-identity": ("Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n", "POST"),
    "te-identity-chunked": ("Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n", "POST"),
    "te-twice": (
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        b"0\r\n\r\n",
        "POST",
    ),
    "te-obfuscated": ("Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n", "POST"),
    "obs-fold": ("X-Note: a\r\n b\r\n", b"", "GET"),
    "obs-fold-tab": ("X-Note: a\r\n\tAuthorization: Bearer x\r\n", b"", "GET"),
    # A second Host (request_bytes writes keyfob's first): RFC 9112 3.2 says 400, since a
    # front proxy and keyfob could each read a different one.
    "two-hosts": ("Host: {listener}\r\n", b"", "GET"),
}


@pytest.mark.parametrize("case", sorted(FRAMINGS))
def test_an_ambiguous_framing_is_refused_and_reaches_nobody(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
    case: str,
) -> None:
    """CR/LF/NUL in headers, conflicting lengths, odd codings, folding: 4xx, nothing sent."""
    p = sets["bearer"]
    lease = mint(agent, p, "request")
    before, upstream_before = listener.connections, len(upstream.seen)
    extra, body, method = FRAMINGS[case]
    extra = extra.replace("{listener}", f"{listener.host}:{listener.port}")
    data = request_bytes(server, f"/proxy/{p.set_path}/echo", lease, extra, body, method)
    answer = raw_http(server, data)
    assert_refused_raw(answer)
    assert len(upstream.seen) == upstream_before, upstream.seen[upstream_before:]
    assert_unseen(server, operator, listener, before, answer=answer.whole)
    assert_lease_unused(agent, p, lease)


REQUEST_LINES = {
    # A raw CR/LF in the request-target ends the request line early: the parser must not read
    # the rest as an HTTP/0.9 request whose "headers" the agent smuggled in.
    "crlf-then-header": "GET {prefix}/echo\r\nX-Injected: 1 HTTP/1.1\r\n",
    "space-in-target": "GET {prefix}/echo /x HTTP/1.1\r\n",
    "no-version": "GET {prefix}/echo\r\n",
    "http-0.9": "GET {prefix}/echo HTTP/0.9\r\n",
    "bad-version": "GET {prefix}/echo HTTP/1.x\r\n",
}


@pytest.mark.parametrize("case", sorted(REQUEST_LINES))
def test_a_request_line_with_injected_crlf_is_refused(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
    case: str,
) -> None:
    """A request line cut short by a CRLF in the path (read as HTTP/0.9 plus headers): 4xx."""
    p = sets["bearer"]
    lease = mint(agent, p, "request")
    before, upstream_before = listener.connections, len(upstream.seen)
    line = REQUEST_LINES[case].format(prefix=f"/proxy/{p.set_path}")
    authority = urlsplit(server.url).netloc
    data = f"{line}Host: {authority}\r\nX-Keyfob-Lease: {lease}\r\nConnection: close\r\n\r\n"
    answer = raw_http(server, data.encode("latin-1"))
    assert_refused_raw(answer)
    assert len(upstream.seen) == upstream_before, upstream.seen[upstream_before:]
    assert_unseen(server, operator, listener, before, answer=answer.whole)
    assert_lease_unused(agent, p, lease)


def test_a_host_header_or_absolute_target_naming_the_listener_changes_nothing(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
) -> None:
    """The destination comes from the profile: ``Host`` and an absolute-form target are ignored."""
    p = sets["bearer"]
    before = listener.connections
    evil = f"{listener.host}:{listener.port}"
    lease = mint(agent, p)
    seen = {}
    for form in ("host-header", "absolute-form", "absolute-form-elsewhere"):
        marker = f"{form}-{unique()}"
        target = f"/proxy/{p.set_path}/echo/{marker}"
        if form == "absolute-form":
            target = f"http://{evil}{target}"
        elif form == "absolute-form-elsewhere":
            target = f"http://{evil}/steal/{marker}"
        data = (
            f"GET {target} HTTP/1.1\r\n"
            f"Host: {evil}\r\nX-Keyfob-Lease: {lease}\r\nConnection: close\r\n\r\n"
        )
        answer = raw_http(server, data.encode())
        seen[marker] = answer.whole
        if answer.status == 200:
            got = seen_at(upstream, marker)
            assert header_values(got, "host") == [f"{upstream.host}:{upstream.port}"]
        else:
            assert_refused_raw(answer)
    assert_unseen(server, operator, listener, before, **seen)


def test_an_upgrade_to_websocket_is_refused(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
) -> None:
    """``Upgrade: websocket`` (and h2c) get 400; nothing is opened upstream."""
    p = sets["bearer"]
    before, upstream_before = listener.connections, len(upstream.seen)
    seen = {}
    for upgrade in (
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    ):
        lease = mint(agent, p, "request")
        data = request_bytes(server, f"/proxy/{p.set_path}/echo", lease, upgrade)
        # request_bytes adds "Connection: close"; a second Connection header is fine here.
        answer = raw_http(server, data)
        assert answer.status == 400, answer.whole[:300]
        seen[upgrade[:20]] = answer.whole
        assert_lease_unused(agent, p, lease)
    assert len([s for s in upstream.seen[upstream_before:] if "/after" not in s.path]) == 0
    assert_unseen(server, operator, listener, before, **seen)


# -- 5. credentials the agent sends -----------------------------------------------------------

AGENT_CREDENTIALS = [
    ("Authorization", "Bearer attacker-bearer-1"),
    ("Authorization", "Basic YXR0YWNrZXI6cGFzc3dvcmQ="),
    ("x-api-key", "attacker-x-api-key"),
    ("api-key", "attacker-azure-key"),
    ("Proxy-Authorization", "Basic YXR0YWNrZXI6cHJveHk="),
    ("Cookie", "session=attacker-cookie"),
    # Naming its own credential headers as hop-by-hop, hoping keyfob drops its own too.
    ("Connection", "authorization, x-api-key, api-key"),
]
OWN_CREDENTIAL = {
    "bearer": ("authorization", f"Bearer {CANARY}"),
    "header": ("x-api-key", CANARY),
    "basic": ("authorization", f"Basic {BASIC}"),
}


def _lease_headers(where: str, lease: str) -> list[tuple[str, str]]:
    return {
        "x-keyfob-lease": [("X-Keyfob-Lease", lease)],
        "authorization": [("Authorization", f"Bearer {lease}")],
        "x-api-key": [("x-api-key", lease)],
    }[where]


@pytest.mark.parametrize("where", ["x-keyfob-lease", "authorization", "x-api-key"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_exactly_one_credential_reaches_upstream_and_it_is_keyfobs(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
    kind: str,
    where: str,
) -> None:
    """Whatever credentials the agent adds, upstream sees only the one the profile injects."""
    p = sets[kind]
    before = listener.connections
    lease = mint(agent, p)
    marker = unique("creds")
    # The lease first: it is the credential keyfob reads; the rest are the attack.
    headers = [*_lease_headers(where, lease), *AGENT_CREDENTIALS]
    answer = agent.post(
        p.url(f"/echo/{marker}"), headers=headers, content=b"{}", params={"q": "1"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    got = seen_at(upstream, marker)
    present = {name: header_values(got, name) for name in CREDENTIAL_HEADERS}
    if kind in OWN_CREDENTIAL:
        name, value = OWN_CREDENTIAL[kind]
        assert present.pop(name) == [value]
    elif kind == "aws_sigv4":
        (signed,) = present.pop("authorization")
        assert signed.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    else:
        assert dict(parse_qsl(got.query)) == {"q": "1", "key": CANARY}
    assert {name: values for name, values in present.items() if values} == {}
    blob = wire(got)
    assert b"attacker" not in blob
    assert lease.encode() not in blob
    assert header_values(got, "connection") in ([], ["keep-alive"], ["close"])
    assert_unseen(
        server, operator, listener, before, tuple(KINDS[kind][1].values()), echo=shown(answer)
    )


def test_the_lease_header_is_found_after_a_credential_the_agent_did_not_mean_as_a_lease(
    sets: dict[str, Proxied], agent: httpx.Client, upstream: FakeUpstream
) -> None:
    """An SDK that always sends ``Authorization`` still works with ``X-Keyfob-Lease`` beside it."""
    p = sets["header"]
    marker = unique("order")
    answer = agent.get(
        p.url(f"/echo/{marker}"),
        headers=[("Authorization", "Bearer sdk-placeholder"), ("X-Keyfob-Lease", mint(agent, p))],
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    got = seen_at(upstream, marker)
    assert header_values(got, "x-api-key") == [CANARY]
    assert header_values(got, "authorization") == []


NOT_A_LEASE_PLACE = {
    "proxy-authorization": ([("Proxy-Authorization", "Bearer {lease}")], ""),
    "api-key": ([("api-key", "{lease}")], ""),
    "cookie": ([("Cookie", "lease={lease}")], ""),
    "query": ([], "?lease={lease}&x-keyfob-lease={lease}&api_key={lease}"),
}


@pytest.mark.parametrize("where", sorted(NOT_A_LEASE_PLACE))
def test_a_lease_is_read_only_from_the_three_documented_headers(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    upstream: FakeUpstream,
    where: str,
) -> None:
    """Only ``Authorization: Bearer``, ``x-api-key`` or ``X-Keyfob-Lease``; never the URL."""
    p = sets["header"]
    lease = mint(agent, p, "request")
    upstream_before = len(upstream.seen)
    headers, query = NOT_A_LEASE_PLACE[where]
    answer = agent.get(
        p.url("/echo/misplaced") + query.format(lease=lease),
        headers=[(k, v.format(lease=lease)) for k, v in headers],
    )
    assert_problem(answer, 401, "unauthorized")
    assert len(upstream.seen) == upstream_before
    assert_lease_unused(agent, p, lease)


def test_a_lease_put_in_the_url_is_not_written_to_the_server_log(
    sets: dict[str, Proxied], agent: httpx.Client, server: LiveServer
) -> None:
    """Refused, the lease stays valid: so it must not sit in the log for anyone to replay."""
    p = sets["header"]
    lease = mint(agent, p, "request")
    answer = agent.get(p.url("/echo/in-url"), params={"lease": lease})
    assert_problem(answer, 401, "unauthorized")
    assert lease not in server.log_text()


# -- 6. an upstream that echoes the credential back -------------------------------------------

MASK = "*" * len(CANARY)


def _proxy_record(operator: httpx.Client, p: Proxied, request_id: str) -> dict[str, Any]:
    """The ``proxy.request`` audit record of one request (written just after it finished)."""
    deadline = time.monotonic() + 5
    while True:
        records = [
            r
            for r in audit(operator, action="proxy.request", target=f"secret_set:{p.set_path}")
            if r["request_id"] == request_id
        ]
        if records or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(records) == 1, records
    return records[0]


@pytest.mark.parametrize("kind", ["bearer", "header", "basic", "query"])
def test_an_echoed_credential_comes_back_masked(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    kind: str,
) -> None:
    """``/echo`` reflects the injected key; the agent sees ``*`` in the body and headers."""
    p = sets[kind]
    before = listener.connections
    answer = agent.post(
        p.url("/echo/reflect"),
        params={"q": "1"},
        headers={"X-Keyfob-Lease": mint(agent, p)},
        content=b"plain body",
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    echoed = answer.json()
    pairs = {k.lower(): v for k, v in echoed["headers"]}
    if kind == "bearer":
        assert answer.headers["x-echo-authorization"] == f"Bearer {MASK}"
        assert pairs["authorization"] == f"Bearer {MASK}"
    elif kind == "header":
        assert answer.headers["x-echo-api-key"] == MASK
        assert pairs["x-api-key"] == MASK
    elif kind == "basic":
        assert answer.headers["x-echo-authorization"] == "Basic " + "*" * len(BASIC)
        assert pairs["authorization"] == "Basic " + "*" * len(BASIC)
    else:
        assert answer.headers["x-echo-query"] == f"q=1&key={MASK}"
        assert echoed["query"] == f"q=1&key={MASK}"
    assert echoed["body"] == "plain body"
    record = _proxy_record(operator, p, answer.headers["x-keyfob-request-id"])
    assert record["details"]["scrubbed"] > 0
    assert record["details"]["status"] == 200
    assert_unseen(
        server, operator, listener, before, tuple(KINDS[kind][1].values()), echo=shown(answer)
    )


@pytest.mark.parametrize("kind", ["bearer", "header"])
def test_a_credential_split_across_sse_chunks_comes_back_masked(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    kind: str,
) -> None:
    """The upstream cuts each echoed key in two writes; the agent's stream is still masked."""
    p = sets[kind]
    before = listener.connections
    with agent.stream(
        "GET",
        p.url("/sse"),
        params={"events": 3, "split": 1},
        headers={"X-Keyfob-Lease": mint(agent, p)},
        timeout=10,
    ) as answer:
        assert answer.status_code == 200
        body = answer.read()
    events = [
        json.loads(line[len(b"data: ") :])
        for line in body.splitlines()
        if line.startswith(b"data: ")
    ]
    expected = f"Bearer {MASK}" if kind == "bearer" else MASK
    assert [e["auth"] for e in events] == [expected] * 3
    record = _proxy_record(operator, p, answer.headers["x-keyfob-request-id"])
    assert record["details"]["scrubbed"] >= 3
    assert_unseen(server, operator, listener, before, stream=shown(answer))


def test_a_credential_in_a_header_name_or_encoded_in_a_header_comes_back_masked(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
) -> None:
    """An upstream that names a header after the key, or sends it as upper-case hex, URL-
    encoded twice or as JSON \\u escapes: all masked. (Fails before issue 10 item 8: header
    names were not scrubbed, and none of those three forms was known.)"""
    p = sets["bearer"]
    before = listener.connections
    every_u = "".join(f"\\u{ord(c):04x}" for c in CANARY)
    masked = {
        "x-hex": CANARY.encode().hex().upper(),
        "x-url2": quote(quote(CANARY, safe=""), safe=""),
        "x-json": every_u,
    }
    pairs = [("set", f"x-leak-{CANARY}:1"), *(("set", f"{k}:{v}") for k, v in masked.items())]
    answer = agent.get(
        p.url("/headers"), params=pairs, headers={"X-Keyfob-Lease": mint(agent, p)}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-leak-" + MASK] == "1"
    for name, sent in masked.items():
        assert answer.headers[name] == "*" * len(sent)
    record = _proxy_record(operator, p, answer.headers["x-keyfob-request-id"])
    assert record["details"]["scrubbed"] == 4
    assert_unseen(server, operator, listener, before, echo=shown(answer))


def test_a_compressed_echo_is_decompressed_and_masked_or_refused(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
) -> None:
    """``/gzip`` compresses though asked for identity: masked in plain text, or a 502."""
    p = sets["bearer"]
    before = listener.connections
    marker = unique("gzip")
    answer = agent.get(
        p.url(f"/gzip/{marker}"),
        headers={"X-Keyfob-Lease": mint(agent, p), "Accept-Encoding": "gzip"},
        timeout=10,
    )
    assert header_values(seen_at(upstream, marker), "accept-encoding") == ["identity"]
    # What arrived on the wire, undecoded: a gzip body would hide the canary from leaks().
    if answer.status_code == 200:
        assert "content-encoding" not in answer.headers
        assert answer.json() == {"auth": f"Bearer {MASK}"}
        record = _proxy_record(operator, p, answer.headers["x-keyfob-request-id"])
        assert record["details"]["scrubbed"] > 0
    else:
        problem = assert_problem(answer, 502, "bad-gateway")
        assert problem["reason"] == "compressed_response"
    assert_unseen(server, operator, listener, before, answer=shown(answer))


# -- 7. an agent trying to move the key ---------------------------------------------------------

PLACEHOLDERS = ["{API_KEY}", "${API_KEY}", "{{API_KEY}}"]


@pytest.mark.parametrize("kind", ["bearer", "header", "query"])
def test_placeholders_the_agent_writes_stay_literal(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
    kind: str,
) -> None:
    """``{API_KEY}`` in the body, a header, the query or the path is sent as written."""
    p = sets[kind]
    before = listener.connections
    marker = unique("move")
    body = json.dumps({"a": PLACEHOLDERS[0], "b": PLACEHOLDERS[1], "c": PLACEHOLDERS[2]})
    path = f"/echo/{marker}/%7BAPI_KEY%7D/$%7BAPI_KEY%7D/%7B%7BAPI_KEY%7D%7D"
    query = "a={API_KEY}&b=${API_KEY}&c={{API_KEY}}&key={API_KEY}"
    answer = agent.post(
        p.url(path) + "?" + query,
        headers={
            "X-Keyfob-Lease": mint(agent, p),
            "X-Template": " ".join(PLACEHOLDERS),
            "Content-Type": "application/json",
        },
        content=body.encode(),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    got = seen_at(upstream, marker)
    assert got.body == body.encode()
    assert header_values(got, "x-template") == [" ".join(PLACEHOLDERS)]
    assert got.path.endswith("/%7BAPI_KEY%7D/$%7BAPI_KEY%7D/%7B%7BAPI_KEY%7D%7D")
    sent = parse_qsl(got.query)
    assert ("a", "{API_KEY}") in sent
    assert ("b", "${API_KEY}") in sent
    assert ("c", "{{API_KEY}}") in sent
    # The value is only where the profile puts it: one header, or the profile's parameter.
    blob = wire(got)
    assert blob.count(CANARY.encode()) == 1
    if kind == "query":
        assert [v for k, v in sent if k == "key"] == [CANARY]
    else:
        assert ("key", "{API_KEY}") in sent
    assert_unseen(server, operator, listener, before, echo=shown(answer))


ROUTING_HINTS = [
    ("X-Keyfob-Inject", "header:X-Leak"),
    ("X-Keyfob-Upstream", "{listener_url}"),
    ("X-Keyfob-Target", "{listener_url}/steal"),
    ("X-Keyfob-Host", "{listener}"),
    ("X-Forwarded-Host", "{listener}"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Port", "{port}"),
    ("Forwarded", "for=203.0.113.9;host={listener};proto=http"),
    ("X-Original-URL", "/steal"),
    ("X-Rewrite-URL", "/steal"),
    ("X-Real-IP", "127.0.0.1"),
]


def test_routing_hints_from_the_agent_change_nothing_about_the_destination(
    sets: dict[str, Proxied],
    agent: httpx.Client,
    server: LiveServer,
    operator: httpx.Client,
    listener: Listener,
    upstream: FakeUpstream,
) -> None:
    """``X-Keyfob-*``, ``X-Forwarded-Host``, ``Forwarded``: it goes where the profile says."""
    p = sets["bearer"]
    before = listener.connections
    marker = unique("hints")
    subs = {
        "listener_url": listener.url,
        "listener": f"{listener.host}:{listener.port}",
        "port": str(listener.port),
    }
    headers = [(k, v.format(**subs)) for k, v in ROUTING_HINTS]
    answer = agent.get(
        p.url(f"/echo/{marker}"), headers=[("X-Keyfob-Lease", mint(agent, p)), *headers], timeout=10
    )
    assert answer.status_code == 200, answer.text
    got = seen_at(upstream, marker)
    assert got.path == f"/echo/{marker}"
    assert header_values(got, "host") == [f"{upstream.host}:{upstream.port}"]
    assert header_values(got, "authorization") == [f"Bearer {CANARY}"]
    assert header_values(got, "x-leak") == []
    assert wire(got).count(CANARY.encode()) == 1
    assert_unseen(server, operator, listener, before, echo=shown(answer))


@pytest.fixture(autouse=True)
def _no_stray_listener_bytes(listener: Listener) -> Iterator[None]:
    """Whatever a test did, nothing it sent may have reached the listener."""
    yield
    assert CANARY.encode() not in bytes(listener.received)


def test_the_whole_audit_export_and_server_log_hold_no_secret(
    server: LiveServer, operator: httpx.Client, listener: Listener
) -> None:
    """After every attack above: no value of any set in the export or the log (run last)."""
    time.sleep(0.1)  # the last proxy.request records are committed just after their response
    export = operator.get("/v1/audit/export")
    assert export.status_code == 200, export.text
    assert export.content.count(b"\n") > 0
    values = sorted({value for _, entries in KINDS.values() for value in entries.values()})
    haystacks = {"audit export": export.content, "server log": server.log_text().encode()}
    assert leaks(values, haystacks) == []
    assert bytes(listener.received) == b""
