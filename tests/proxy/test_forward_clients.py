"""Real, unmodified clients through the forward proxy: each sends only a placeholder
key and the proxy credential; the fake upstream (a real provider's name, over TLS)
receives the set's real credential, and the child sees none of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import CANARY
from tests.proxy.forwarding import (
    GIT_CANARY,
    GIT_HOST,
    OPENAI_HOST,
    PLACEHOLDER,
    Forward,
    build,
)


@pytest.fixture(scope="module")
def fwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forward]:
    yield from build(tmp_path_factory.mktemp("forward"))


def _run(fwd: Forward, args: list[str], **extra: str) -> str:
    done = subprocess.run(
        args,
        env=fwd.child_env(**extra),
        capture_output=True,
        timeout=60,
        check=False,
        cwd=fwd.workdir,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    assert CANARY not in output
    assert GIT_CANARY not in output
    return output


def _last_auth(fwd: Forward) -> str | None:
    return fwd.upstream.seen[-1].header("authorization")


def test_curl(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _run(
        fwd,
        [
            "curl",
            "-sS",
            "--fail",
            "-H",
            f"Authorization: Bearer {PLACEHOLDER}",
            f"https://{OPENAI_HOST}/v1/echo",
        ],
    )
    assert json.loads(out)["path"] == "/v1/echo"
    assert _last_auth(fwd) == f"Bearer {CANARY}"
    assert fwd.upstream.seen[-1].header("x-keyfob-lease") is None


def _python(fwd: Forward, code: str) -> str:
    return _run(fwd, [sys.executable, "-c", code])


def test_python_requests(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _python(
        fwd,
        "import requests; r = requests.get('https://api.openai.com/v1/echo', "
        f"headers={{'Authorization': 'Bearer {PLACEHOLDER}'}}); r.raise_for_status(); "
        "print(r.json()['path'])",
    )
    assert out.strip() == "/v1/echo"
    assert _last_auth(fwd) == f"Bearer {CANARY}"


def test_httpx(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _python(
        fwd,
        "import httpx; r = httpx.post('https://api.openai.com/v1/echo', json={'a': 1}, "
        f"headers={{'Authorization': 'Bearer {PLACEHOLDER}'}}); r.raise_for_status(); "
        "print(r.json()['body'])",
    )
    assert json.loads(out) == {"a": 1}
    assert _last_auth(fwd) == f"Bearer {CANARY}"


def test_openai_sdk_without_base_url(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _python(
        fwd,
        "from openai import OpenAI; c = OpenAI(max_retries=0); "
        "r = c.chat.completions.create(model='gpt-4o-mini', "
        "messages=[{'role': 'user', 'content': 'hi'}]); print(r.choices[0].message.content)",
    )
    assert out.strip() == "hello from upstream"
    seen = fwd.upstream.seen[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.header("authorization") == f"Bearer {CANARY}"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_ls_remote(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _run(fwd, ["git", "ls-remote", f"https://{GIT_HOST}/org/repo.git"])
    assert "refs/heads/main" in out
    import base64

    expected = base64.b64encode(f"x-access-token:{GIT_CANARY}".encode()).decode()
    assert fwd.upstream.seen[-1].header("authorization") == f"Basic {expected}"


# Node 20's fetch (undici) and https ignore HTTPS_PROXY; the documented way without
# extra packages is a CONNECT of one's own, then TLS over that socket (docs/proxy.md).
_NODE = r"""
const http = require('http'), https = require('https'), tls = require('tls');
const proxy = new URL(process.env.HTTPS_PROXY);
const auth = Buffer.from(decodeURIComponent(proxy.username) + ':' +
  decodeURIComponent(proxy.password)).toString('base64');
const req = http.request({host: proxy.hostname, port: proxy.port, method: 'CONNECT',
  path: 'api.openai.com:443', headers: {'Proxy-Authorization': 'Basic ' + auth}});
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.error('CONNECT', res.statusCode); process.exit(1); }
  const agent = new https.Agent({keepAlive: false});
  agent.createConnection = () => tls.connect({socket, servername: 'api.openai.com'});
  https.get({host: 'api.openai.com', path: '/v1/echo', agent,
    headers: {Authorization: 'Bearer ' + process.env.OPENAI_API_KEY}}, (r) => {
    let body = ''; r.on('data', (d) => body += d);
    r.on('end', () => { console.log(JSON.parse(body).path); process.exit(0); });
  });
});
req.end();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_https(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _run(fwd, ["node", "-e", _NODE])
    assert out.strip() == "/v1/echo"
    assert _last_auth(fwd) == f"Bearer {CANARY}"


def test_keep_alive_many_requests_one_tunnel(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _python(
        fwd,
        "import httpx\nwith httpx.Client() as c:\n"
        "    for i in range(5):\n"
        "        c.get('https://api.openai.com/v1/echo', params={'i': i}).raise_for_status()\n"
        "print('ok')",
    )
    assert out.strip() == "ok"
    assert [s.header("authorization") for s in fwd.upstream.seen] == [f"Bearer {CANARY}"] * 5


def test_keyfob_run_uses_the_forward_proxy_and_revokes_its_credential(fwd: Forward) -> None:
    """``keyfob run --forward-proxy``: CMD (here curl and Python) sees a placeholder key,
    the proxy and the bundle, never the set's value or the agent token; the upstream gets
    the real key; the credential is revoked when CMD exits."""
    fwd.upstream.clear()
    script = (
        "import json, os, httpx; "
        "r = httpx.get('https://api.openai.com/v1/echo', "
        "headers={'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']}); "
        "print(json.dumps({'status': r.status_code, 'env': dict(os.environ)}))"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(fwd.workdir),
        "KEYFOB_ADDR": fwd.server.url,
        "KEYFOB_TOKEN": fwd.agent_token,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyfob.cli",
            "run",
            "--forward-proxy",
            f"127.0.0.1:{fwd.proxy_port}",
            "--set",
            fwd.openai_set,
            "--set",
            fwd.git_set,
            "--",
            sys.executable,
            "-c",
            script,
        ],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    child = json.loads(done.stdout)
    assert child["status"] == 200
    assert fwd.upstream.seen[-1].header("authorization") == f"Bearer {CANARY}"
    seen_env = child["env"]
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert seen_env[name].startswith("http://keyfob:kfl_")
    for name in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
        "AWS_CA_BUNDLE",
    ):
        assert seen_env[name].endswith("bundle.pem")
    assert seen_env["NO_PROXY"] == "127.0.0.1"
    assert seen_env["OPENAI_API_KEY"] == "keyfob-placeholder"
    assert "OPENAI_BASE_URL" not in seen_env
    assert "KEYFOB_TOKEN" not in seen_env
    for secret in (CANARY, GIT_CANARY, fwd.agent_token):
        assert secret not in output
    # The credential ended with CMD.
    revoked = fwd.audit(action="lease.revoke")[-1]
    assert revoked["target"].startswith("lease_bundle:")
    credential = seen_env["HTTPS_PROXY"].split("keyfob:", 1)[1].split("@", 1)[0]
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth(credential))
    sock.close()
    assert answer.startswith(b"HTTP/1.1 407")
