"""Egress: where the proxy's sockets may go, whatever DNS, the environment or ``.netrc`` say.

Resolution tests run the app in-process with the resolver replaced, so a name can resolve
to any address; a socket spy records every address keyfob tries to connect to (loopback
ones are really connected, so a slip would reach the listener). The environment test
runs a keyfob server process with proxy variables and a ``.netrc`` pointing at the
listener; the same server shows that the private-upstream flag is displayed.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohappyeyeballs
import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from keyfob.app import create_app
from keyfob.app.bootstrap import init_vault
from keyfob.proxy import egress
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.conftest import CANARY
from tests.proxy.factories import BEARER, local_profile, proxied, unique
from tests.support.http import assert_problem
from tests.support.server import LiveServer, start_server
from tests.support.upstream import FakeUpstream, Listener
from tests.test_leak import leaks

PUBLIC = "93.184.216.34"
BASE = "http://keyfob.test"
NAME = "rebind.example"


# -- a resolver that answers what the test says, and a socket spy ---------------------------


class FakeResolver(AbstractResolver):
    """Answers every name with the addresses in ``answers`` (in that order)."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers
        ]

    async def close(self) -> None:
        return None


@dataclass
class Dns:
    """What the name resolves to next, what keyfob asked and what it tried to connect to."""

    answers: list[str] = field(default_factory=list)
    resolvers: list[FakeResolver] = field(default_factory=list)
    tried: list[tuple[str, int]] = field(default_factory=list)

    def resolver(self) -> FakeResolver:
        made = FakeResolver(self.answers)
        self.resolvers.append(made)
        return made


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    """Replace the system resolver inside ``CheckedResolver`` and spy on every connect."""
    state = Dns()
    monkeypatch.setattr(egress, "ThreadedResolver", state.resolver)
    real = aiohappyeyeballs.start_connection

    async def spy(addr_infos: Sequence[Any], **kwargs: Any) -> socket.socket:
        state.tried.extend((info[4][0], info[4][1]) for info in addr_infos)
        # Loopback is really connected (so a wrongly kept listener address counts there);
        # anything else would leave this machine, so it fails at once instead.
        local = [i for i in addr_infos if ipaddress.ip_address(i[4][0]).is_loopback]
        if local:
            return await real(local, **kwargs)
        raise OSError(errno.ECONNREFUSED, "connection refused (test spy)")

    monkeypatch.setattr(aiohappyeyeballs, "start_connection", spy)
    return state


@dataclass
class InProcess:
    """The app in-process with an operator client; a set pointing at ``NAME``."""

    http: httpx.AsyncClient
    agent: httpx.AsyncClient

    async def set_with(self, profile: dict[str, Any]) -> str:
        """Create a set, an agent and a grant; return a fresh workflow lease's URL prefix."""
        name = unique("egress")
        created = await self.http.post(
            "/v1/secret-sets",
            json={
                "provider": "generic",
                "environment": "test",
                "name": name,
                "entries": {"API_KEY": CANARY},
                "profile": profile,
            },
        )
        assert created.status_code == 201, created.text
        return f"generic/test/{name}"

    async def lease(self, set_path: str) -> str:
        agent = await self.http.post("/v1/agents", json={"name": unique("agent")})
        assert agent.status_code == 201, agent.text
        granted = await self.http.post(
            "/v1/grants", json={"agent": agent.json()["name"], "secret_set": set_path}
        )
        assert granted.status_code == 201, granted.text
        minted = await self.agent.post(
            "/v1/leases",
            json={"secret_set": set_path},
            headers={"Authorization": f"Bearer {agent.json()['token']}"},
        )
        assert minted.status_code == 201, minted.text
        token: str = minted.json()["token"]
        return token

    async def proxy(self, set_path: str, rest: str = "/echo") -> httpx.Response:
        lease = await self.lease(set_path)
        return await self.agent.get(f"/proxy/{set_path}{rest}", headers={"X-Keyfob-Lease": lease})

    async def audit_text(self) -> bytes:
        export = await self.http.get("/v1/audit/export")
        assert export.status_code == 200, export.text
        return export.content


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[InProcess]:
    settings = Settings(data_dir=tmp_path / "data", proxy_connect_timeout=2, proxy_read_timeout=2)
    vault, done = await Vault.initialise(settings)
    keyfob = create_app(settings, vault=vault)
    transport = httpx.ASGITransport(app=keyfob)
    operator = {"Authorization": f"Bearer {done.operator_token.reveal()}"}
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url=BASE, headers=operator) as http,
            httpx.AsyncClient(transport=transport, base_url=BASE) as agent,
        ):
            yield InProcess(http, agent)
    finally:
        await keyfob.aclose()
        await vault.close()


def named_profile(
    port: int, *, allow_private: bool = False, scheme: str = "https"
) -> dict[str, Any]:
    return {
        "base_url": f"{scheme}://{NAME}:{port}",
        "hosts": [NAME],
        "inject": BEARER,
        "allow_private_upstream": allow_private,
    }


# -- 8. a name that resolves to a private or metadata address ----------------------------------

REFUSED_ANSWERS = {
    "loopback-listener": (["127.0.0.1"], "loopback"),
    "metadata": (["169.254.169.254"], "metadata"),
    "private": (["10.0.0.1"], "private"),
    "loopback-ipv6": (["::1"], "loopback"),
    "ipv4-mapped-loopback": (["::ffff:127.0.0.1"], "loopback"),
    "nat64-loopback": (["64:ff9b::7f00:1"], "loopback"),
    "cgnat": (["100.64.0.1"], "cgnat"),
    "unspecified": (["0.0.0.0"], "unspecified"),
    "several-private": (["10.0.0.1", "127.0.0.1"], None),
}


@pytest.mark.parametrize("case", sorted(REFUSED_ANSWERS))
async def test_a_name_resolving_to_a_private_address_is_refused(
    app: InProcess, dns: Dns, listener: Listener, case: str
) -> None:
    """A public-looking host whose DNS answer is private: 502, and no socket opened at all."""
    answers, address_class = REFUSED_ANSWERS[case]
    dns.answers[:] = answers
    before = listener.connections
    set_path = await app.set_with(named_profile(listener.port))
    answer = await app.proxy(set_path)
    problem = assert_problem(answer, 502, "bad-gateway")
    assert problem["reason"] == "destination_refused"
    if address_class is not None:
        assert problem["address_class"] == address_class
    else:
        assert problem["address_class"] in ("private", "loopback")
    assert dns.tried == []
    assert [r.asked for r in dns.resolvers if r.asked] == [[NAME]]
    await asyncio.sleep(0.05)
    assert listener.connections == before
    seen = {"response": answer.content + str(answer.headers).encode()}
    assert leaks([CANARY], {**seen, "audit": await app.audit_text()}) == []


async def test_metadata_stays_refused_when_private_upstreams_are_allowed(
    app: InProcess, dns: Dns, listener: Listener
) -> None:
    """``allow_private_upstream`` opens loopback and private ranges, never 169.254.169.254."""
    dns.answers[:] = ["169.254.169.254"]
    set_path = await app.set_with(named_profile(listener.port, allow_private=True, scheme="http"))
    answer = await app.proxy(set_path)
    problem = assert_problem(answer, 502, "bad-gateway")
    assert problem["reason"] == "destination_refused"
    assert problem["address_class"] == "metadata"
    assert dns.tried == []


async def test_only_the_public_address_of_a_mixed_answer_is_tried(
    app: InProcess, dns: Dns, listener: Listener
) -> None:
    """One public and one loopback answer: keyfob keeps the public one, never the listener."""
    dns.answers[:] = [PUBLIC, "127.0.0.1", "::1", "169.254.169.254"]
    before = listener.connections
    set_path = await app.set_with(named_profile(listener.port))
    answer = await app.proxy(set_path)
    # The spy refuses the public address: a plain connection failure, not a refusal.
    problem = assert_problem(answer, 502, "bad-gateway")
    assert problem["reason"] == "connect"
    assert set(dns.tried) == {(PUBLIC, listener.port)}
    await asyncio.sleep(0.05)
    assert listener.connections == before
    assert leaks([CANARY], {"response": answer.content, "audit": await app.audit_text()}) == []


async def test_a_public_answer_with_the_private_flag_still_connects_where_it_resolved(
    app: InProcess, dns: Dns, listener: Listener, upstream: FakeUpstream
) -> None:
    """With ``allow_private_upstream`` a name resolving to loopback is reached (the flag works)."""
    dns.answers[:] = ["127.0.0.1"]
    set_path = await app.set_with(named_profile(upstream.port, allow_private=True, scheme="http"))
    marker = unique("named")
    answer = await app.proxy(set_path, f"/echo/{marker}")
    assert answer.status_code == 200, answer.text
    assert set(dns.tried) == {("127.0.0.1", upstream.port)}
    (got,) = [s for s in upstream.seen if marker in s.path]
    assert got.header("host") == f"{NAME}:{upstream.port}"
    assert got.header("authorization") == f"Bearer {CANARY}"


# -- check_literal and CheckedResolver on their own ---------------------------------------------

LITERALS = [
    # host, allow_private, refusal reason (None: passes)
    ("api.example.com", False, None),
    ("93.184.216.34", False, None),
    ("2606:2800:220:1:248:1893:25c8:1946", False, None),
    ("127.0.0.1", False, "loopback"),
    ("127.0.0.1", True, None),
    ("10.0.0.1", False, "private"),
    ("10.0.0.1", True, None),
    ("::1", False, "loopback"),
    ("::ffff:127.0.0.1", False, "loopback"),
    ("64:ff9b::a9fe:a9fe", True, "metadata"),
    ("169.254.169.254", True, "metadata"),
    ("0.0.0.0", True, "unspecified"),
    ("224.0.0.1", True, "multicast"),
    ("::ffff:93.184.216.34", False, "ipv4_mapped"),
    ("127.1", True, "ambiguous_address"),
    ("0x7f000001", True, "ambiguous_address"),
    ("2130706433", True, "ambiguous_address"),
    ("0177.0.0.1", True, "ambiguous_address"),
    ("fe80::1%eth0", True, "ambiguous_address"),
]


@pytest.mark.parametrize(("host", "allow_private", "reason"), LITERALS)
def test_check_literal(host: str, allow_private: bool, reason: str | None) -> None:
    """IP literals are judged before any socket; ambiguous forms are never guessed at."""
    if reason is None:
        egress.check_literal(host, allow_private)
        return
    with pytest.raises(egress.DestinationRefused) as refused:
        egress.check_literal(host, allow_private)
    assert refused.value.reason == reason


async def _resolve(answers: list[str], allow_private: bool, host: str = NAME) -> list[str]:
    resolver = egress.CheckedResolver(allow_private)
    resolver._inner = FakeResolver(answers)
    try:
        return [info["host"] for info in await resolver.resolve(host, 443, socket.AF_UNSPEC)]
    finally:
        await resolver.close()


@pytest.mark.parametrize(
    ("answers", "allow_private", "kept"),
    [
        ([PUBLIC], False, [PUBLIC]),
        ([PUBLIC, "127.0.0.1", "10.0.0.1"], False, [PUBLIC]),
        (["127.0.0.1", PUBLIC], False, [PUBLIC]),
        (
            ["::1", "2606:2800:220:1:248:1893:25c8:1946"],
            False,
            ["2606:2800:220:1:248:1893:25c8:1946"],
        ),
        (["127.0.0.1", "10.0.0.1"], True, ["127.0.0.1", "10.0.0.1"]),
        (["127.0.0.1", "169.254.169.254"], True, ["127.0.0.1"]),
        (["fe80::1%eth0", PUBLIC], False, [PUBLIC]),
    ],
)
async def test_the_resolver_keeps_only_allowed_addresses(
    answers: list[str], allow_private: bool, kept: list[str]
) -> None:
    """Refused answers are dropped, the rest kept in order; unreadable ones are skipped."""
    assert await _resolve(answers, allow_private) == kept


@pytest.mark.parametrize(
    ("answers", "allow_private", "reason"),
    [
        (["127.0.0.1"], False, "loopback"),
        (["169.254.169.254"], False, "metadata"),
        (["169.254.169.254"], True, "metadata"),
        (["::ffff:10.0.0.1"], False, "private"),
        (["64:ff9b::7f00:1"], False, "loopback"),
        (["2001::1"], True, "teredo"),
        (["100.64.0.1"], False, "cgnat"),
        ([], False, "no_address"),
    ],
)
async def test_the_resolver_refuses_when_nothing_is_left(
    answers: list[str], allow_private: bool, reason: str
) -> None:
    """No address left: refused, naming the class of what was dropped."""
    with pytest.raises(egress.DestinationRefused) as refused:
        await _resolve(answers, allow_private)
    assert refused.value.reason == reason


async def test_the_resolver_refuses_an_ip_literal_before_resolving() -> None:
    """A literal never reaches the system resolver: it is judged as written."""
    resolver = egress.CheckedResolver(False)
    inner = FakeResolver([PUBLIC])
    resolver._inner = inner
    try:
        with pytest.raises(egress.DestinationRefused) as refused:
            await resolver.resolve("127.0.0.1", 443)
        assert refused.value.reason == "loopback"
        assert inner.asked == []
    finally:
        await resolver.close()


# -- 9. proxy variables and .netrc are ignored --------------------------------------------------


@dataclass
class EnvServer:
    server: LiveServer
    operator: httpx.Client


@pytest.fixture(scope="module")
def env_server(tmp_path_factory: pytest.TempPathFactory, listener: Listener) -> Iterator[EnvServer]:
    """A keyfob server whose environment sends HTTP to the listener and has a ``.netrc``
    (also the server for the display test: one start-up per module)."""
    workdir = tmp_path_factory.mktemp("env-server")
    home = workdir / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(
        "machine 127.0.0.1 login netrc-user password netrc-password-3c5e7a9b\n"
        "default login netrc-default password netrc-password-3c5e7a9b\n"
    )
    netrc.chmod(0o600)
    proxy = listener.url
    extra = {
        "KEYFOB_PROXY_READ_TIMEOUT": "2",
        "KEYFOB_PROXY_CONNECT_TIMEOUT": "2",
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "ALL_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "all_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
        "HOME": str(home),
        "NETRC": str(netrc),
    }
    settings = Settings(data_dir=workdir / "data")
    init = init_vault(settings)
    assert init.operator_token is not None
    live = start_server(settings, init.operator_token.reveal(), workdir / "server.log", extra)
    try:
        with httpx.Client(
            base_url=live.url,
            headers={"Authorization": f"Bearer {live.operator_token}"},
            timeout=30,
            trust_env=False,
        ) as operator:
            yield EnvServer(live, operator)
    finally:
        live.stop()


def test_proxy_variables_and_netrc_are_ignored(
    env_server: EnvServer, listener: Listener, upstream: FakeUpstream
) -> None:
    """With ``HTTP_PROXY`` and ``.netrc`` set, the request still goes straight to the upstream."""
    header = {"kind": "header", "name": "x-api-key", "template": "{API_KEY}"}
    p = proxied(env_server.operator, local_profile(upstream, inject=header))
    before = listener.connections
    marker = unique("env")
    with httpx.Client(trust_env=False, timeout=10) as agent:
        answer = agent.get(p.url(f"/echo/{marker}"), headers={"X-Keyfob-Lease": p.lease()})
    assert answer.status_code == 200, answer.text
    (got,) = [s for s in upstream.seen if marker in s.path]
    assert got.header("x-api-key") == CANARY
    assert got.header("authorization") is None
    assert got.header("proxy-authorization") is None
    # Straight to the upstream: origin-form path, the upstream as Host.
    assert got.path == f"/echo/{marker}"
    assert got.header("host") == f"{upstream.host}:{upstream.port}"
    time.sleep(0.05)
    assert listener.connections == before
    assert b"netrc" not in bytes(listener.received)
    log = env_server.server.log_text().encode()
    assert leaks([CANARY, "netrc-password-3c5e7a9b"], {"log": log, "answer": answer.content}) == []


# -- 10. the private-upstream flag is shown wherever the profile is --------------------------------


def _cli(server: LiveServer, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env.update(KEYFOB_ADDR=server.url, KEYFOB_TOKEN=server.operator_token)
    done = subprocess.run(
        [sys.executable, "-m", "keyfob.cli", *args],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def _private_line(shown: str) -> str:
    lines = [line for line in shown.splitlines() if "private" in line.lower()]
    assert len(lines) == 1, f"`keyfob set show` does not show allow_private_upstream:\n{shown}"
    return lines[0].lower()


def test_the_private_upstream_flag_is_shown_by_the_api_and_the_cli(
    env_server: EnvServer, upstream: FakeUpstream
) -> None:
    """In JSON and in ``keyfob set show`` an operator sees which sets may reach private hosts."""
    # Any keyfob server will do; this module's one is already running.
    server, operator = env_server.server, env_server.operator
    lenient = proxied(operator, local_profile(upstream)).set_path
    strict = proxied(
        operator,
        {"base_url": "https://api.example.com/v1", "hosts": ["api.example.com"], "inject": BEARER},
    ).set_path

    for path, flag in ((lenient, True), (strict, False)):
        view = operator.get(f"/v1/secret-sets/{path}")
        assert view.status_code == 200, view.text
        assert view.json()["profile"]["allow_private_upstream"] is flag

    allowed = _private_line(_cli(server, "set", "show", lenient))
    refused = _private_line(_cli(server, "set", "show", strict))
    assert allowed != refused
    assert "not" not in allowed
    assert any(word in allowed for word in ("allowed", "yes", "true", "on"))
    assert any(word in refused for word in ("not allowed", "no", "false", "off"))
