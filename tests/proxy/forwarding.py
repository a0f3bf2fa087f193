"""A keyfob server with the forward proxy on, a TLS fake upstream that answers for real
provider names (through ``test_resolve``), and an agent holding a multi-set lease.

Shared by the forward-proxy test modules: each builds one per module (``build``).
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import httpx

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.conftest import CANARY
from tests.proxy.factories import unique
from tests.support.certs import TestCa
from tests.support.hashing import FAST_HASHING
from tests.support.server import LiveServer, free_port, serve_in_thread
from tests.support.upstream import FakeUpstream

OPENAI_HOST = "api.openai.com"
GIT_HOST = "git.example.test"
OTHER_HOST = "other.example.test"
HOSTS = (OPENAI_HOST, GIT_HOST, OTHER_HOST)
# Resolved to the fake upstream too, but not named by its certificate: a bad certificate.
BADCERT_HOST = "badcert.example.test"
PLACEHOLDER = "sk-keyfob-placeholder"
GIT_CANARY = "ghp_canary9d1e7a3c5b8f2e4d6a0c1b3e5f7a9d2c"


@dataclass
class TestPki:
    ca_file: Path
    server: ssl.SSLContext


def make_pki(directory: Path) -> TestPki:
    """A throwaway CA (the upstreams' "public" CA) and one certificate for every host."""
    ca = TestCa(directory, "upstream test CA")
    return TestPki(ca.ca_file, ca.server("upstream", HOSTS))


@dataclass
class Forward:
    """Everything a forward-proxy test needs."""

    server: LiveServer
    upstream: FakeUpstream
    pki: TestPki
    operator: httpx.Client
    proxy_port: int
    agent_name: str
    agent_token: str
    openai_set: str
    git_set: str
    credential: str
    bundle_id: str
    bundle: Path  # system roots + keyfob's CA + (in tests) the upstreams' CA
    workdir: Path

    @property
    def proxy_url(self) -> str:
        return f"http://keyfob:{self.credential}@127.0.0.1:{self.proxy_port}"

    def proxy_auth(self, credential: str | None = None) -> str:
        raw = f"keyfob:{credential or self.credential}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def child_env(self, **extra: str) -> dict[str, str]:
        """What ``keyfob run`` gives a child: proxy, bundle, a placeholder key, no secret."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "HTTPS_PROXY": self.proxy_url,
            "https_proxy": self.proxy_url,
            "NO_PROXY": "",
            "SSL_CERT_FILE": str(self.bundle),
            "REQUESTS_CA_BUNDLE": str(self.bundle),
            "CURL_CA_BUNDLE": str(self.bundle),
            "NODE_EXTRA_CA_CERTS": str(self.bundle),
            "GIT_SSL_CAINFO": str(self.bundle),
            "OPENAI_API_KEY": PLACEHOLDER,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        env.update(extra)
        return env

    def mint(self, sets: list[str], **body: Any) -> httpx.Response:
        return self.operator.post(
            "/v1/leases",
            json={"secret_sets": sets, "scope": "workflow", **body},
            headers={"Authorization": f"Bearer {self.agent_token}"},
        )

    def connect(self, target: str, auth: str | None = None) -> tuple[socket.socket, bytes]:
        """A raw CONNECT; the socket and the proxy's answer head (and any body)."""
        sock = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=10)
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if auth is not None:
            head += f"Proxy-Authorization: {auth}\r\n"
        sock.sendall((head + "\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return sock, answer

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        answer = self.operator.get("/v1/audit", params={"limit": 1000, **filters})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def audit_until(
        self,
        done: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 10,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """``audit(**filters)`` once ``done`` holds for it: for records the server writes
        on its own time (after a failed handshake, a hang-up, the next grouped commit)."""
        deadline = time.monotonic() + timeout
        while not done(records := self.audit(**filters)):
            assert time.monotonic() < deadline, f"no such audit records: {filters}"
            time.sleep(0.02)
        return records


def _profile(base_url: str, host: str, inject: dict[str, Any]) -> dict[str, Any]:
    return {"base_url": base_url, "hosts": [host], "inject": inject}


def build(tmp: Path) -> Iterator[Forward]:
    pki = make_pki(tmp)
    upstream = FakeUpstream(tls=pki.server).start()
    proxy_port = free_port()
    resolve = ",".join(f"{h}:443=127.0.0.1:{upstream.port}" for h in (*HOSTS, BADCERT_HOST))
    settings = Settings(
        data_dir=tmp / "data",
        proxy_read_timeout=5,
        proxy_connect_timeout=5,
        upstream_ca_file=pki.ca_file,
        proxy_listen=f"127.0.0.1:{proxy_port}",
        test_resolve=resolve,
        **FAST_HASHING,
    )
    init = init_vault(settings)
    assert init.operator_token is not None
    server = serve_in_thread(settings, init.operator_token.reveal(), tmp / "server.log")
    operator = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.operator_token}"},
        timeout=30,
    )
    try:
        name = unique("fwd")
        openai_set = f"openai/test/{name}"
        git_set = f"github/test/{name}"
        for path, entries, profile in (
            (
                openai_set,
                {"OPENAI_API_KEY": CANARY},
                # The real preset: its base URL is the provider's own.
                {"preset": "openai"},
            ),
            (
                git_set,
                {"GIT_USER": "x-access-token", "GIT_TOKEN": GIT_CANARY},
                _profile(
                    f"https://{GIT_HOST}/org",
                    GIT_HOST,
                    {"kind": "basic", "username": "{GIT_USER}", "password": "{GIT_TOKEN}"},
                ),
            ),
        ):
            provider, environment, set_name = path.split("/")
            created = operator.post(
                "/v1/secret-sets",
                json={
                    "provider": provider,
                    "environment": environment,
                    "name": set_name,
                    "entries": entries,
                    "profile": profile,
                },
            )
            assert created.status_code == 201, created.text
        agent = operator.post("/v1/agents", json={"name": unique("fwdagent")})
        assert agent.status_code == 201, agent.text
        for path in (openai_set, git_set):
            granted = operator.post(
                "/v1/grants",
                json={
                    "agent": agent.json()["name"],
                    "secret_set": path,
                    "scopes": ["workflow"],
                },
            )
            assert granted.status_code == 201, granted.text
        token = agent.json()["token"]
        minted = operator.post(
            "/v1/leases",
            json={"secret_sets": [openai_set, git_set], "scope": "workflow", "ttl": 600},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert minted.status_code == 201, minted.text
        ca = operator.get("/v1/ca", headers={"Authorization": f"Bearer {token}"})
        assert ca.status_code == 200, ca.text
        bundle = tmp / "bundle.pem"
        # Real clients trust the merged bundle; here the "public" roots are the test CA's.
        bundle.write_text(
            Path(certifi.where()).read_text() + pki.ca_file.read_text() + ca.json()["certificate"]
        )
        yield Forward(
            server,
            upstream,
            pki,
            operator,
            proxy_port,
            agent.json()["name"],
            token,
            openai_set,
            git_set,
            minted.json()["token"],
            minted.json()["id"],
            bundle,
            tmp,
        )
    finally:
        operator.close()
        server.stop()
        upstream.stop()
