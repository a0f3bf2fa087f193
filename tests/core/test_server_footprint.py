"""A started server has not imported what it loads only on first use (docs/architecture.md,
"What a serving process imports"): each module below is ~1-8 MB of idle memory that a
server that never needs it should not hold. The server is the real one, in a child
process, after one request of each kind; ``tests.support.footprint`` lists its modules."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.support.footprint import ProbedServer, start_probed
from tests.support.server import env_for, free_port

pytestmark = pytest.mark.slow  # server child processes

# Each entry: a module a SQLite server with default settings must not have imported.
LAZY = {
    "typer": "keyfob serve execs a fresh interpreter for the server (bootstrap.exec_server)",
    "rich": "keyfob serve execs a fresh interpreter for the server (bootstrap.exec_server)",
    "httpx": "keyfob serve execs a fresh interpreter for the server (bootstrap.exec_server)",
    "keyfob.cli": "keyfob serve execs a fresh interpreter for the server (bootstrap.exec_server)",
    "sqlalchemy.orm": "the store uses SQL core only (keyfob.store._asyncio)",
    "uvicorn.main": "uvicorn's command line (keyfob.app._uvicorn)",
    "click": "uvicorn's command line (keyfob.app._uvicorn)",
    "watchfiles": "uvicorn's reloader (keyfob.app._uvicorn)",
    "multiprocessing": "uvicorn's worker supervisor (keyfob.app._uvicorn)",
    "websockets": "keyfob serves no WebSocket (uvicorn ws='none')",
    "uvicorn.protocols.websockets": "keyfob serves no WebSocket (uvicorn ws='none')",
    "jinja2": "the dashboard is built on its first request (keyfob.app.LazyDashboard)",
    "keyfob.dashboard": "the dashboard is built on its first request (keyfob.app.LazyDashboard)",
    "sqlalchemy.dialects.postgresql": "a SQLite server loads no PostgreSQL dialect",
    "asyncpg": "a SQLite server loads no PostgreSQL driver",
    "jwt": "PyJWT signs only refreshed JWT-bearer credentials (vault.token_grants)",
    "cryptography.x509": "X.509 only to make a certificate (the CA, --self-signed)",
    "keyfob.proxy.forward": "the forward proxy is built only with KEYFOB_PROXY_LISTEN",
    "h11": "the forward proxy is built only with KEYFOB_PROXY_LISTEN",
}


def exercise(server: ProbedServer) -> None:
    """Requests a running server typically gets: health, the API, a mint, the proxy."""
    operator = {"Authorization": f"Bearer {server.operator_token}"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        assert http.get("/v1/agents", headers=operator).status_code == 200
        agent = http.post("/v1/agents", json={"name": "footprint"}, headers=operator)
        assert agent.status_code == 201
        refused = http.post(
            "/v1/leases",
            json={"secret_set": "openai/prod/none"},
            headers={"Authorization": f"Bearer {agent.json()['token']}"},
        )
        assert refused.status_code == 403  # no grant
        assert refused.headers["content-type"] == "application/problem+json"
        proxied = http.post(
            "/proxy/openai/prod/none/v1/chat", headers={"Authorization": "Bearer kfl_" + "x" * 43}
        )
        assert proxied.status_code == 401
        assert proxied.headers["content-type"] == "application/problem+json"


def start(tmp_path: Path, settings: Settings, **kw: object) -> ProbedServer:
    init = init_vault(settings)
    assert init.operator_token is not None
    server = start_probed(settings, init.operator_token.reveal(), tmp_path, **kw)  # type: ignore[arg-type]
    try:
        exercise(server)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module", params=[False, True], ids=["run_server", "keyfob serve"])
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ProbedServer]:
    tmp = tmp_path_factory.mktemp("footprint")
    started = start(tmp, Settings(data_dir=tmp / "data"), cli=request.param)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def served(server: ProbedServer) -> set[str]:
    """The server's modules after ``exercise``, before any test's own requests."""
    return server.modules()


@pytest.mark.parametrize("module", sorted(LAZY))
def test_a_started_server_has_not_imported(served: set[str], module: str) -> None:
    assert module not in served, LAZY[module]


def test_the_dashboard_is_built_on_its_first_request(
    server: ProbedServer, served: set[str]
) -> None:
    """The first ``/ui`` request builds the dashboard: its pages, error pages and security
    headers are there from that request on."""
    assert "keyfob.dashboard" not in served
    with httpx.Client(base_url=server.url, timeout=30) as http:
        missing = http.get("/ui/no-such-page")  # the very first /ui request: an error page
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")
        assert "No such page." in missing.text
        assert "content-security-policy" in missing.headers
        login = http.get("/ui/login")
        assert login.status_code == 200
        assert "<form" in login.text
        assert "content-security-policy" in login.headers
        assert http.get("/ui/").status_code in (303, 307)
    assert {"jinja2", "keyfob.dashboard"} <= server.modules()


def test_a_server_that_cannot_start_exits_3(tmp_path: Path) -> None:
    """As with ``uvicorn.run``: the lifespan failed (the master key file is gone), so the
    process exits with uvicorn's start-up failure status, 3, and its log says why."""
    settings = Settings(data_dir=tmp_path / "data")
    init_vault(settings)
    settings.resolved_master_key_file.unlink()
    serve = (
        "import sys; from keyfob.settings import Settings; "
        "from keyfob.app.bootstrap import run_server; "
        "run_server(Settings(), '127.0.0.1', int(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", serve, str(free_port())],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Application startup failed" in done.stderr
    assert "master key" in done.stderr


def test_a_websocket_upgrade_gets_problem_json_and_no_library_advice(tmp_path: Path) -> None:
    """Without a WebSocket protocol (``ws="none"``) an upgrade request is an HTTP request:
    the proxy refuses it with 400 problem+json; uvicorn's advice to install a WebSocket
    library stays out of keyfob's log."""
    import socket

    server = start(tmp_path, Settings(data_dir=tmp_path / "data"))
    try:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"GET /proxy/openai/prod/none/v1/realtime HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"X-Keyfob-Lease: kfl_" + b"x" * 43 + b"\r\n\r\n"
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 400"), answer[:300]
        assert b"content-type: application/problem+json" in head
        server.stop()
        assert "WebSocket library" not in server.log_text()
    finally:
        server.stop()


@pytest.mark.parametrize("cli", [False, True], ids=["KEYFOB_PROXY_LISTEN", "--forward-proxy"])
def test_the_forward_proxy_is_there_when_configured(tmp_path: Path, cli: bool) -> None:
    """With ``KEYFOB_PROXY_LISTEN`` (or ``keyfob serve --forward-proxy``, which the
    process ``keyfob serve`` execs into must get) the forward proxy is built and listens:
    a CONNECT without a lease is refused there with a problem answer."""
    import socket

    listen = free_port()
    where = f"127.0.0.1:{listen}"
    server = start(
        tmp_path,
        Settings(data_dir=tmp_path / "data"),
        extra_env=None if cli else {"KEYFOB_PROXY_LISTEN": where},
        cli=cli,
        cli_args=("--forward-proxy", where) if cli else (),
    )
    try:
        with socket.create_connection(("127.0.0.1", listen), timeout=10) as sock:
            sock.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
            answer = sock.recv(65536)
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 407"), answer[:300]
        assert b"application/problem+json" in head
        assert {"h11", "keyfob.proxy.forward"} <= server.modules()
    finally:
        server.stop()


STAND_INS = """
import sys
import keyfob.store.engine
from keyfob.store import _asyncio
from keyfob.app import _uvicorn
assert "sqlalchemy.orm" not in sys.modules and "sqlalchemy.ext.asyncio" not in sys.modules
_uvicorn.install()
assert "uvicorn.main" not in sys.modules
# Later real imports (Alembic, tests, a plug-in) get the whole packages, same classes.
import sqlalchemy.ext.asyncio as real
assert real.AsyncConnection is _asyncio.AsyncConnection and real.AsyncSession
assert real.create_async_engine is _asyncio.create_async_engine
import uvicorn
from uvicorn import Config, Server, run
import uvicorn.config, uvicorn.server, uvicorn.main
assert Config is uvicorn.config.Config and Server is uvicorn.server.Server
assert run is uvicorn.main.run and uvicorn.__version__
print("ok")
"""


def test_a_later_import_of_the_real_packages_gets_the_same_classes() -> None:
    """The stand-ins (``store._asyncio``, ``app._uvicorn``) leave ``sqlalchemy.ext.asyncio``
    and ``uvicorn`` whole for any later importer."""
    done = subprocess.run(
        [sys.executable, "-c", STAND_INS], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
