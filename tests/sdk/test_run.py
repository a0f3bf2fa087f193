"""``keyfob run`` as a real process against a running keyfob: the child calls a fake
provider through keyfob with the leases in its environment (no key, no agent token
there), the leases die with it, its exit code and signals pass through, a long command
keeps working, and every keyfob-side failure is one line and exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CANARY
from tests.proxy.factories import Proxied
from tests.sdk.conftest import generic_set, preset_set
from tests.support import loopback, zygote
from tests.support.server import LiveServer, free_port
from tests.support.upstream import FakeUpstream
from tests.test_leak import leaks

pytestmark = pytest.mark.slow  # servers or commands in child processes, seconds each

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import httpx, openai

    answer = openai.OpenAI(max_retries=0).chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": "hi"}]
    )
    generic = {name: value for name, value in os.environ.items() if name.startswith("KEYFOB_")}
    extra = None
    for name in generic:
        if name.startswith("KEYFOB_PROXY_URL_GENERIC"):
            lease = os.environ["KEYFOB_LEASE_" + name.removeprefix("KEYFOB_PROXY_URL_")]
            extra = httpx.get(
                os.environ[name] + "/echo", headers={"Authorization": "Bearer " + lease}
            ).status_code
    print(json.dumps({"answer": answer.choices[0].message.content, "extra": extra,
                      "env": dict(os.environ)}))
    """
)


def keyfob_run(
    server_url: str, token: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return zygote.run_module(
        "keyfob.cli", ["run", *args], env=run_env(server_url, token), timeout=timeout, text=True
    )


def run_env(server_url: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYFOB_", "OPENAI_"))}
    # Key material a server's environment may hold; CMD must inherit none of it.
    withheld = {
        "KEYFOB_MASTER_KEY": CANARY + "-master",
        "KEYFOB_PKCS11_PIN": CANARY + "-pin",
        "KEYFOB_DATABASE_URL": f"postgresql://keyfob:{CANARY}-db@127.0.0.1:1/x",
        "KEYFOB_AUDIT_SHIP_WEBHOOK_TOKEN": CANARY + "-ship",
        "KEYFOB_AUDIT_SHIP_WEBHOOK_SECRET": CANARY + "-sign",
    }
    return {**env, **withheld, "KEYFOB_ADDR": server_url, "KEYFOB_TOKEN": token}


def same_agent(operator: httpx.Client, upstream: FakeUpstream, agent: Proxied) -> Proxied:
    """A generic set on the fake upstream, granted to ``agent``'s agent too."""
    other = generic_set(operator, upstream, scopes=["workflow"])
    granted = operator.post(
        "/v1/grants",
        json={"agent": agent.agent_name, "secret_set": other.set_path, "scopes": ["workflow"]},
    )
    assert granted.status_code == 201, granted.text
    return other


def test_the_child_calls_through_keyfob_and_holds_no_key(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    world = preset_set(operator, upstream, "openai", "OPENAI_API_KEY", scopes=["workflow"])
    other = same_agent(operator, upstream, world)
    done = keyfob_run(
        server.url,
        world.agent_token,
        "--set",
        world.set_path,
        "--set",
        other.set_path,
        "--",
        sys.executable,
        "-c",
        CHILD,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    seen = json.loads(done.stdout)
    assert seen["answer"] == "hello from upstream"
    assert seen["extra"] == 200
    env = seen["env"]
    suffix = world.set_path.upper().replace("/", "_")
    lease = env["OPENAI_API_KEY"]
    assert lease.startswith("kfl_")
    assert env["OPENAI_BASE_URL"] == f"{server.url}/proxy/{world.set_path}/v1"
    assert env[f"KEYFOB_LEASE_{suffix}"] == lease
    assert env[f"KEYFOB_PROXY_URL_{suffix}"] == f"{server.url}/proxy/{world.set_path}"
    assert "KEYFOB_TOKEN" not in env
    assert "KEYFOB_MASTER_KEY" not in env
    assert "KEYFOB_PKCS11_PIN" not in env
    assert not {k for k in env if k.startswith(("KEYFOB_DATABASE", "KEYFOB_AUDIT_SHIP"))}
    assert leaks([CANARY, world.agent_token], {"out": done.stdout.encode()}) == []
    # The child's lease died with it.
    after = loopback.post(
        f"{server.url}/proxy/{world.set_path}/v1/chat/completions",
        headers={"Authorization": f"Bearer {lease}"},
        json={"model": "m", "messages": []},
    )
    assert after.status_code == 403
    assert after.json()["reason"] == "revoked"
    revokes = operator.get(
        "/v1/audit", params={"action": "lease.revoke", "target": f"secret_set:{world.set_path}"}
    ).json()["items"]
    assert [e["actor"].split(":")[0] for e in revokes] == ["agent"]


def test_exit_code_and_signals_pass_through(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream, tmp_path: Path
) -> None:
    world = generic_set(operator, upstream, scopes=["workflow"])
    args = ("--set", world.set_path, "--", sys.executable, "-c")
    assert keyfob_run(server.url, world.agent_token, *args, "raise SystemExit(7)").returncode == 7

    trap = textwrap.dedent(
        """
        import signal, sys, time
        def stop(signum, frame):
            print("child got", signum, flush=True)
            sys.exit(43)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        time.sleep(30)
        """
    )
    for script, expected in (
        (trap, 43),
        ("import time; print('ready', flush=True); time.sleep(30)", 128 + 15),
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "keyfob.cli", "run", *args, script],
            env=run_env(server.url, world.agent_token),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == expected, err
        if expected == 43:
            assert out.strip() == f"child got {signal.SIGTERM.value}"
    leases = operator.get("/v1/leases", params={"secret_set": world.set_path}).json()["items"]
    assert leases == []  # every lease of the three runs revoked (none active)


def test_a_long_command_outlives_its_first_lease_term(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    world = generic_set(operator, upstream, scopes=["workflow"], max_lease_ttl=3)
    suffix = world.set_path.upper().replace("/", "_")
    script = textwrap.dedent(
        f"""
        import os, time, httpx
        time.sleep(4.5)
        print(httpx.get(os.environ["KEYFOB_PROXY_URL_{suffix}"] + "/echo",
              headers={{"X-Keyfob-Lease": os.environ["KEYFOB_LEASE_{suffix}"]}}).status_code)
        """
    )
    done = keyfob_run(
        server.url, world.agent_token, "--set", world.set_path, "--", sys.executable, "-c", script
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "200"
    renewals = operator.get(
        "/v1/audit", params={"action": "lease.renew", "target": f"secret_set:{world.set_path}"}
    ).json()["items"]
    assert len(renewals) >= 2
    assert {e["details"]["ttl"] for e in renewals} == {3}


def test_dry_run_masks_the_leases_and_mints_none(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    world = preset_set(operator, upstream, "anthropic", "ANTHROPIC_API_KEY", scopes=["workflow"])
    done = keyfob_run(
        server.url, world.agent_token, "--set", world.set_path, "--dry-run", "--", "true"
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines())
    suffix = world.set_path.upper().replace("/", "_")
    assert lines == {
        "ANTHROPIC_BASE_URL": f"{server.url}/proxy/{world.set_path}",
        "ANTHROPIC_API_KEY": "kfl_********",
        f"KEYFOB_PROXY_URL_{suffix}": f"{server.url}/proxy/{world.set_path}",
        f"KEYFOB_LEASE_{suffix}": "kfl_********",
    }
    as_json = keyfob_run(
        server.url, world.agent_token, "--set", world.set_path, "--dry-run", "--json", "--", "true"
    )
    assert json.loads(as_json.stdout) == {"env": lines, "command": ["true"]}
    mints = operator.get(
        "/v1/audit", params={"action": "lease.mint", "target": f"secret_set:{world.set_path}"}
    ).json()["items"]
    assert mints == []


def test_keyfob_side_failures_are_one_line_and_exit_2(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream, tmp_path: Path
) -> None:
    world = generic_set(operator, upstream, scopes=["workflow"])
    request_only = generic_set(operator, upstream, scopes=["request"])
    stranger = generic_set(operator, upstream, scopes=["workflow"])
    marker = tmp_path / "ran"
    command = ("--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    cases = {
        "unknown set": (server.url, world.agent_token, "generic/test/nosuch", "not among"),
        "no grant": (server.url, world.agent_token, stranger.set_path, "not among"),
        "no workflow scope": (
            server.url,
            request_only.agent_token,
            request_only.set_path,
            "workflow",
        ),
        "unknown token": (server.url, "kfa_" + "u" * 43, world.set_path, "nauthorized"),
        "operator token": (server.url, server.operator_token, world.set_path, "agent token"),
        "unreachable": (
            f"http://127.0.0.1:{free_port()}",
            world.agent_token,
            world.set_path,
            "unreachable",
        ),
        "malformed set": (server.url, world.agent_token, "../etc", "not among"),
    }
    outputs: dict[str, bytes] = {}
    for name, (url, token, set_path, says) in cases.items():
        done = keyfob_run(url, token, "--set", set_path, *command)
        assert done.returncode == 2, (name, done.stderr)
        (line,) = done.stderr.splitlines()
        assert line.startswith("keyfob run: error: ")
        assert says in line, (name, line)
        assert "Traceback" not in done.stderr
        outputs[name] = (done.stdout + done.stderr).encode()
    no_command = keyfob_run(server.url, world.agent_token, "--set", world.set_path)
    assert no_command.returncode == 2
    assert not marker.exists()  # CMD never started
    missing = keyfob_run(
        server.url, world.agent_token, "--set", world.set_path, "--", "/nonexistent/cmd"
    )
    assert missing.returncode == 127
    assert "cannot start /nonexistent/cmd" in missing.stderr
    assert operator.get("/v1/leases", params={"secret_set": world.set_path}).json()["items"] == []
    secrets = [CANARY, world.agent_token, server.operator_token]
    assert leaks(secrets, {**outputs, "server log": server.log_text().encode()}) == []


def test_approval_pending_or_denied_is_exit_2(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream, tmp_path: Path
) -> None:
    world = generic_set(operator, upstream, scopes=["workflow"], approval="required")
    marker = tmp_path / "ran"
    command = ("--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    pending = keyfob_run(server.url, world.agent_token, "--set", world.set_path, *command)
    assert pending.returncode == 2
    assert "approve it (`keyfob lease approve " in pending.stderr
    assert "--wait" in pending.stderr
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyfob.cli",
            "run",
            "--set",
            world.set_path,
            "--wait",
            "20",
            *command,
        ],
        env=run_env(server.url, world.agent_token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = pending.stderr.split("keyfob lease approve ")[1].split("`")[0]
    requests: list[dict[str, Any]] = []
    for _ in range(200):
        items = operator.get("/v1/lease-requests").json()["items"]
        requests = [r for r in items if r["id"] != first]
        if requests:
            break
        time.sleep(0.05)
    (request,) = requests
    assert operator.post(f"/v1/lease-requests/{request['id']}/deny").status_code == 200
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "denied" in err
    assert len(err.splitlines()) == 1
    assert not marker.exists()


def test_a_signal_while_the_command_starts_reaches_it(monkeypatch: Any) -> None:
    """A signal that lands while ``keyfob run`` is starting CMD (here: right after the
    child exists, before ``Popen`` has returned) is passed on, not lost or fatal."""
    from keyfob.cli import run as run_module

    missed: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: missed.append(signum))
    real_popen = subprocess.Popen

    def popen_then_signal(*args: Any, **kwargs: Any) -> Any:
        child = real_popen(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGUSR2)
        return child

    monkeypatch.setattr(run_module.subprocess, "Popen", popen_then_signal)
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR2, lambda *_: sys.exit(42))\n"
        "time.sleep(5)\n"
    )
    try:
        code = run_module.supervise([sys.executable, "-c", script], dict(os.environ))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert missed == []
    # The child got it: by its own handler, or by the default action before it set one.
    assert code in (42, -signal.SIGUSR2)


def test_over_https_with_keyfob_ca_file_cmd_trusts_that_ca_next_to_the_system_roots(
    tmp_path: Path,
) -> None:
    from keyfob.cli.errors import CliError
    from keyfob.cli.run import BUNDLE_VARIABLES, trust_env

    ca = tmp_path / "keyfob.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    environ = {"KEYFOB_CA_FILE": str(ca)}
    # Plain http, or https trusted through the public CAs: CMD keeps its own trust.
    assert trust_env("http://127.0.0.1:8200", environ, tmp_path) == {}
    assert trust_env("https://keyfob.example.com", {}, tmp_path) == {}
    assert trust_env("https://keyfob.example.com", environ, None) == dict.fromkeys(
        BUNDLE_VARIABLES, "<bundle>"
    )
    env = trust_env("https://keyfob.example.com", environ, tmp_path)
    assert set(env) == set(BUNDLE_VARIABLES)
    bundle = Path(env["SSL_CERT_FILE"]).read_text()
    assert bundle.endswith("# keyfob's CA (KEYFOB_CA_FILE)\n" + ca.read_text())
    assert bundle.count("BEGIN CERTIFICATE") > 1  # the system's roots come first
    # A CA file that also holds a key: only the certificate reaches CMD's bundle.
    ca.write_text(ca.read_text() + "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    env = trust_env("https://keyfob.example.com", environ, tmp_path)
    assert "PRIVATE KEY" not in Path(env["SSL_CERT_FILE"]).read_text()
    with pytest.raises(CliError, match="cannot read"):
        trust_env("https://k.example.com", {"KEYFOB_CA_FILE": str(tmp_path / "no")}, tmp_path)
    ca.write_text("no certificate here\n")
    with pytest.raises(CliError, match="holds no PEM certificate"):
        trust_env("https://keyfob.example.com", environ, tmp_path)
