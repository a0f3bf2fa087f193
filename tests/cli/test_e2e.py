"""The CLI against a real keyfob server: every command, and a canary that must never come back."""

from __future__ import annotations

import json
import os
import selectors
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from keyfob.cli.main import create_app
from keyfob.tokens import OPERATOR, looks_like
from tests.support import loopback, zygote
from tests.support.server import free_port

from .conftest import Operator

SET = "openai/prod/default"


def test_set_lifecycle(operator: Operator, canary: str, tmp_path: Path):
    created = operator.ok(
        "set",
        "create",
        SET,
        "--key",
        "OPENAI_API_KEY",
        "--preset",
        "openai",
        "--label",
        "team=ml",
        input=canary + "\n",
    )
    assert f"created {SET} at version 1 (OPENAI_API_KEY)" in created.stdout

    env_file = tmp_path / "more.env"
    env_file.write_text(f"OPENAI_ORG=org-1\nOPENAI_PROJECT='{canary}-project'\n")
    updated = operator.json("set", "put", SET, "--env-file", str(env_file))
    assert updated["version"] == 2
    removed = operator.json("set", "put", SET, "--remove", "OPENAI_PROJECT")
    assert [k["name"] for k in removed["keys"]] == ["OPENAI_API_KEY", "OPENAI_ORG"]  # type: ignore[index, union-attr]

    listed = operator.ok("set", "list", "--provider", "openai", "--label", "team=ml")
    assert SET in listed.stdout
    assert operator.json("set", "list", "--provider", "stripe")["items"] == []
    shown = operator.ok("set", "show", SET)
    assert "hmac-sha256:" in shown.stdout
    assert "https://api.openai.com" in shown.stdout

    versions = operator.json("set", "versions", SET)["items"]
    assert [v["version"] for v in versions] == [3, 2, 1]  # type: ignore[index, union-attr]
    rolled = operator.json("set", "rollback", SET, "1", "--expect-version", "3")
    assert rolled["version"] == 4
    assert [k["name"] for k in rolled["keys"]] == ["OPENAI_API_KEY"]  # type: ignore[index, union-attr]

    stale = operator(
        "set", "put", SET, "--key", "OPENAI_ORG", "--expect-version", "3", input="org-2"
    )
    assert stale.exit_code == 1
    assert stale.stderr.startswith("error: ")
    assert stale.stderr.rstrip().endswith("(HTTP 409 conflict)")
    assert len(stale.stderr.splitlines()) == 1

    operator.ok("set", "delete", SET)
    assert operator.json("set", "list")["items"] == []
    assert len(operator.json("set", "list", "--include-deleted")["items"]) == 1  # type: ignore[arg-type]
    assert operator.json("set", "restore", SET)["deleted_at"] is None
    operator.ok("set", "delete", SET)
    refused = operator("set", "purge", SET)  # no terminal, no --yes
    assert refused.exit_code == 1
    purged = operator.json("set", "purge", SET, "--yes")
    assert purged["purged"] == SET
    gone = operator("set", "show", SET)
    assert gone.exit_code == 1
    assert gone.stderr.rstrip().endswith("(HTTP 404 not-found)")


def test_sets_from_piped_dotenv_and_json(operator: Operator, canary: str):
    operator.ok(
        "set",
        "create",
        "stripe/prod/billing",
        "--preset",
        "stripe",
        input=f"# billing\nexport STRIPE_SECRET_KEY={canary}\n",
    )
    operator.ok("set", "create", "github/dev/bot", input=json.dumps({"GITHUB_TOKEN": canary}))

    paths = [item["path"] for item in operator.json("set", "list")["items"]]  # type: ignore[union-attr, index]
    assert sorted(paths) == ["github/dev/bot", "stripe/prod/billing"]


def test_audit_tail_verify_export(operator: Operator, canary: str, tmp_path: Path):
    operator.ok("set", "create", SET, "--key", "OPENAI_API_KEY", input=canary)
    operator.ok("set", "put", SET, "--key", "OPENAI_ORG", input="org-1")

    tail = operator.ok("audit", "tail", "--limit", "2", "--json")
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["action"] for e in events] == ["secret_set.create", "secret_set.update"]
    assert events[0]["seq"] < events[1]["seq"]
    filtered = operator.ok("audit", "tail", "--action", "secret_set.update")
    assert "secret_set.update" in filtered.stdout
    assert "secret_set.create" not in filtered.stdout

    verified = operator.ok("audit", "verify")
    assert verified.stdout.startswith("audit log ok:")
    assert operator.json("audit", "verify")["ok"] is True

    target = tmp_path / "audit.jsonl"
    exported = operator.json("audit", "export", "--output", str(target))
    lines = target.read_text().splitlines()
    assert exported["records"] == len(lines) >= 3
    assert canary not in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert operator.ok("audit", "export").stdout.splitlines() == lines


def test_keys_rotate_rewrap_retire(operator: Operator, canary: str):
    operator.ok("set", "create", SET, "--key", "OPENAI_API_KEY", input=canary)
    before = operator.json("keys", "status")
    first = before["active_term"]

    rotated = operator.json("keys", "rotate")
    assert rotated["term"] != first
    early = operator("keys", "retire", str(first))
    assert early.exit_code == 1  # still wraps the set's data key
    assert "rewrap" in early.stderr

    rewrapped = operator.json("keys", "rewrap")
    assert rewrapped["term"] == rotated["term"]
    assert rewrapped["rewrapped"] >= 1  # type: ignore[operator]
    assert operator.json("keys", "retire", str(first))["status"] == "retired"
    status = operator.ok("keys", "status")
    assert f"active key term: {rotated['term']}" in status.stdout
    assert "retired" in status.stdout
    # The set still opens after rotation: a rollback re-reads old data keys.
    assert operator.json("set", "rollback", SET, "1")["version"] == 2


def test_tokens_create_list_revoke(operator: Operator):
    created = operator.ok("token", "create", "ci")
    token = created.stdout.splitlines()[-1]
    assert looks_like(token, OPERATOR)
    assert created.stdout.count(token) == 1

    as_ci = operator("set", "list", token=token)
    assert as_ci.exit_code == 0, as_ci.output
    listed = operator.json("token", "list")["items"]
    (ci,) = [t for t in listed if t["name"] == "ci"]  # type: ignore[union-attr, index]
    assert token not in json.dumps(listed)
    assert operator.json("token", "revoke", ci["id"])["revoked_at"] is not None

    revoked = operator("set", "list", token=token)
    assert revoked.exit_code == 1
    assert revoked.stderr.rstrip().endswith("(HTTP 401 unauthorized)")
    assert "KEYFOB_TOKEN" in revoked.stderr


def test_server_errors_are_one_line(operator: Operator):
    unknown = operator("set", "create", SET, "--preset", "no-such-preset", input="A=1\n")
    assert unknown.exit_code == 1
    assert len(unknown.stderr.splitlines()) == 1
    assert "no-such-preset" in unknown.stderr
    assert "Traceback" not in unknown.output

    wrong = operator("set", "list", token=OPERATOR + "x" * 43)
    assert wrong.exit_code == 1
    assert "(HTTP 401 unauthorized)" in wrong.stderr


# --- local commands, as a user runs them ------------------------------------------------------


def run_keyfob(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m keyfob.cli.main ARGS`` with only KEYFOB_DATA_DIR set among KEYFOB_*
    (a process of its own, forked from a warm interpreter: tests/support/zygote.py)."""
    return zygote.run_module(
        "keyfob.cli.main", args, env=local_env(data_dir), timeout=timeout, text=True
    )


def local_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env["KEYFOB_DATA_DIR"] = str(data_dir)
    return env


def test_init_json_in_a_fresh_data_dir(tmp_path: Path):
    data_dir = tmp_path / "fresh"

    first = run_keyfob("init", "--json", data_dir=data_dir)

    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert looks_like(answer["operator_token"], OPERATOR)
    assert Path(answer["data_dir"]) == data_dir.resolve()
    assert answer["database_url"].startswith("sqlite")
    key_file = Path(answer["master_key_file"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    again = run_keyfob("init", data_dir=data_dir)
    assert again.returncode == 1
    assert again.stderr.startswith("error: ")
    assert len(again.stderr.splitlines()) == 1
    assert answer["operator_token"] not in again.stdout + again.stderr


def test_init_human_output_shows_the_token_once(tmp_path: Path):
    result = run_keyfob("init", data_dir=tmp_path / "fresh")

    assert result.returncode == 0, result.stderr
    tokens = [word for word in result.stdout.split() if word.startswith(OPERATOR)]
    assert len(tokens) == 1
    assert "you will not see it again" in result.stdout


def read_until(process: subprocess.Popen[bytes], marker: str, timeout: float = 30) -> str:
    """Stdout of ``process`` up to ``marker``, read from the raw pipe (no buffer to hide in)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while marker.encode() not in seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} in serve output: {seen!r}")
            if selector.select(timeout=0.2):
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"serve exited before {marker!r}: {seen!r}")
                seen += chunk
    return seen.decode()


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if loopback.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.1)


def test_serve_initialises_then_serves(tmp_path: Path):
    data_dir = tmp_path / "served"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with subprocess.Popen(
        [sys.executable, "-m", "keyfob.cli.main", "serve", "--port", str(port)],
        env=local_env(data_dir),  # stdout is a pipe: the banner must arrive while serving
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            banner = read_until(process, "serving on")
            assert f"{url} (dashboard {url}/ui/, API reference {url}/docs)" in banner
            (token,) = [word for word in banner.split() if word.startswith(OPERATOR)]
            wait_healthy(url)
            listed = CliRunner().invoke(
                create_app(),
                ["set", "list", "--json"],
                env={"KEYFOB_ADDR": url, "KEYFOB_TOKEN": token},
            )
            assert listed.exit_code == 0, listed.output
            assert json.loads(listed.stdout) == {"items": []}
        finally:
            process.terminate()

    restarted = run_keyfob("init", data_dir=data_dir)
    assert restarted.returncode == 1  # serve initialised it, so init refuses
