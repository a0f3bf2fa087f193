"""``keyfob set …`` against the real app in-process: value sources, what lands in the vault,
output, confirmation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli, RealKeyfob

SETS = "/v1/secret-sets"
ONE = "/v1/secret-sets/openai/prod/default"


def make(
    real: RealKeyfob,
    path: str = "openai/prod/default",
    entries: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A set created through the API (not the CLI under test)."""
    provider, environment, name = path.split("/")
    body = {
        "provider": provider,
        "environment": environment,
        "name": name,
        "entries": entries or {"OPENAI_API_KEY": "sk-" + "v" * 24},
        **extra,
    }
    with real.http() as http:
        answer = http.post(SETS, json=body)
    assert answer.status_code == 201, answer.text
    view: dict[str, Any] = answer.json()
    return view


def api(real: RealKeyfob, method: str, path: str, **kwargs: Any) -> Any:
    """What the API itself answers."""
    with real.http() as http:
        answer = http.request(method, path, **kwargs)
    assert answer.status_code < 300, answer.text
    return answer.json()


def view(real: RealKeyfob, path: str = "openai/prod/default") -> dict[str, Any] | None:
    """The set as the API shows it (deleted ones too), or None if there is none."""
    provider, environment, name = path.split("/")
    query = {"provider": provider, "environment": environment, "name": name}
    with real.http() as http:
        answer = http.get(SETS, params={**query, "include_deleted": "true"})
    assert answer.status_code == 200, answer.text
    found = answer.json()["items"]
    return found[0] if found else None


def values(real: RealKeyfob, path: str = "openai/prod/default") -> dict[str, str]:
    """The set's current values, decrypted by the vault."""
    revealed = real.run(real.vault.sets.reveal(path))
    return {name: secret.reveal() for name, secret in revealed.items()}


# --- create: where values come from -------------------------------------------------------


def test_create_reads_single_key_value_from_piped_stdin(
    real_cli: Cli, real: RealKeyfob, canary: str
):
    result = real_cli(
        "set",
        "create",
        "openai/prod/default",
        "--key",
        "OPENAI_API_KEY",
        "--preset",
        "openai",
        "--label",
        "team=ml",
        input=canary + "\n",
    )

    assert result.exit_code == 0, result.output
    assert values(real) == {"OPENAI_API_KEY": canary}
    shown = view(real)
    assert shown is not None
    assert shown["labels"] == {"team": "ml"}
    assert shown["profile"]["preset"] == "openai"
    assert canary not in result.output
    assert "created openai/prod/default at version 1 (OPENAI_API_KEY)" in result.stdout


def test_create_strips_exactly_one_trailing_newline(real_cli: Cli, real: RealKeyfob):
    result = real_cli("set", "create", "example/dev/pem", "--key", "PEM", input="line1\nline2\n\n")

    assert result.exit_code == 0, result.output
    assert values(real, "example/dev/pem") == {"PEM": "line1\nline2\n"}


def test_create_prompts_with_hidden_input_on_a_terminal(
    real_cli: Cli, real: RealKeyfob, canary: str
):
    result = real_cli(
        "set",
        "create",
        "stripe/prod/billing",
        "--key",
        "A",
        "--key",
        "B",
        input=f"{canary}-a\n{canary}-b\n",
        tty=True,
    )

    assert result.exit_code == 0, result.output
    assert values(real, "stripe/prod/billing") == {"A": f"{canary}-a", "B": f"{canary}-b"}
    assert "Value for A (hidden)" in result.output
    assert canary not in result.output  # hidden input is not echoed


def test_create_reads_dotenv_lines_from_stdin_without_key(real_cli: Cli, real: RealKeyfob):
    stdin = "# billing bot\nexport STRIPE_KEY=sk_live_1\nSTRIPE_WEBHOOK='whsec x'\n\n"

    result = real_cli("set", "create", "stripe/prod/billing", input=stdin)

    assert result.exit_code == 0, result.output
    assert values(real, "stripe/prod/billing") == {
        "STRIPE_KEY": "sk_live_1",
        "STRIPE_WEBHOOK": "whsec x",
    }


def test_create_reads_a_json_object_from_stdin(real_cli: Cli, real: RealKeyfob):
    result = real_cli("set", "create", "stripe/prod/billing", input='{"A": "1", "B": "2"}')

    assert result.exit_code == 0, result.output
    assert values(real, "stripe/prod/billing") == {"A": "1", "B": "2"}


def test_create_reads_env_file(real_cli: Cli, real: RealKeyfob, tmp_path: Path, canary: str):
    env_file = tmp_path / "prod.env"
    env_file.write_text(f"OPENAI_API_KEY={canary}\nOPENAI_ORG=org-1\n")

    result = real_cli("set", "create", "openai/prod/default", "--env-file", str(env_file), "--json")

    assert result.exit_code == 0, result.output
    assert values(real) == {"OPENAI_API_KEY": canary, "OPENAI_ORG": "org-1"}
    assert json.loads(result.stdout) == view(real)
    assert canary not in result.output


def test_create_refuses_name_equals_value_without_echoing_it(
    real_cli: Cli, real: RealKeyfob, canary: str
):
    result = real_cli("set", "create", "openai/prod/default", "--key", f"OPENAI_API_KEY={canary}")

    assert result.exit_code == 1
    assert "never the command line" in result.stderr
    assert canary not in result.output
    assert real.requests == []
    assert view(real) is None


def test_there_is_no_option_that_takes_a_value(real_cli: Cli, real: RealKeyfob, canary: str):
    result = real_cli("set", "create", "openai/prod/default", "--value", canary)

    assert result.exit_code == 2
    assert real.requests == []
    assert view(real) is None


def test_several_keys_without_a_terminal_are_refused(real_cli: Cli, real: RealKeyfob):
    result = real_cli(
        "set", "create", "openai/prod/default", "--key", "A", "--key", "B", input="x\n"
    )

    assert result.exit_code == 1
    assert "cannot be prompted" in result.stderr
    assert real.requests == []
    assert view(real) is None


@pytest.mark.parametrize("stdin", ["", "\n", "A=\n", '{"A": ""}'])
def test_empty_values_are_refused_client_side(real_cli: Cli, real: RealKeyfob, stdin: str):
    args = ["set", "create", "openai/prod/default"]
    if stdin in ("", "\n"):
        args += ["--key", "A"]

    result = real_cli(*args, input=stdin)

    assert result.exit_code == 1
    assert "empty" in result.stderr
    assert real.requests == []
    assert view(real) is None


def test_create_with_nothing_to_store_on_a_terminal_says_how(real_cli: Cli, real: RealKeyfob):
    result = real_cli("set", "create", "openai/prod/default", tty=True)

    assert result.exit_code == 1
    assert "--key NAME" in result.stderr
    assert real.requests == []


def test_malformed_dotenv_line_names_the_line_not_the_content(real_cli: Cli, real: RealKeyfob):
    result = real_cli("set", "create", "openai/prod/default", input="A=1\nsk-secret-no-equals\n")

    assert result.exit_code == 1
    assert "stdin line 2" in result.stderr
    assert "sk-secret" not in result.output
    assert real.requests == []
    assert view(real) is None


def test_profile_file_is_sent_as_the_profile(real_cli: Cli, real: RealKeyfob, tmp_path: Path):
    profile = {
        "base_url": "https://api.example.com",
        "hosts": ["api.example.com"],
        "inject": {"kind": "header", "name": "X-Api-Key", "template": "{K}"},
    }
    (tmp_path / "p.json").write_text(json.dumps(profile))

    result = real_cli(
        "set",
        "create",
        "example/dev/main",
        "--profile-file",
        str(tmp_path / "p.json"),
        input="K=v\n",
    )

    assert result.exit_code == 0, result.output
    shown = view(real, "example/dev/main")
    assert shown is not None
    assert {k: shown["profile"][k] for k in profile} == profile


def test_preset_and_profile_file_together_are_refused(real_cli: Cli, real: RealKeyfob):
    result = real_cli(
        "set", "create", "a/b/c", "--preset", "openai", "--profile-file", "p.json", input="K=v\n"
    )

    assert result.exit_code == 1
    assert "not both" in result.stderr
    assert real.requests == []


@pytest.mark.parametrize("path", ["openai/prod", "OpenAI/prod/x", "a/b/c/d", "a/../b"])
def test_bad_set_paths_are_refused(real_cli: Cli, real: RealKeyfob, path: str):
    result = real_cli("set", "show", path)

    assert result.exit_code == 1
    assert "provider/environment/name" in result.stderr
    assert real.requests == []


# --- put ------------------------------------------------------------------------------------


def test_put_sends_new_values_removals_and_expected_version(real_cli: Cli, real: RealKeyfob):
    make(real, entries={"OPENAI_API_KEY": "sk-keep", "OLD": "gone"})
    api(real, "PATCH", ONE, json={"entries": {"OLD": "gone-2"}})  # now at version 2

    result = real_cli(
        "set",
        "put",
        "openai/prod/default",
        "--key",
        "NEW",
        "--remove",
        "OLD",
        "--expect-version",
        "2",
        input="v\n",
    )

    assert result.exit_code == 0, result.output
    assert values(real) == {"OPENAI_API_KEY": "sk-keep", "NEW": "v"}
    assert "updated openai/prod/default at version 3" in result.stdout


def test_put_with_only_remove_does_not_wait_for_stdin(real_cli: Cli, real: RealKeyfob):
    make(real, entries={"OPENAI_API_KEY": "sk-keep", "OLD": "gone"})

    result = real_cli("set", "put", "openai/prod/default", "--remove", "OLD", input="IGNORED=1\n")

    assert result.exit_code == 0, result.output
    assert values(real) == {"OPENAI_API_KEY": "sk-keep"}


def test_put_lost_update_is_reported_as_conflict(real_cli: Cli, real: RealKeyfob):
    make(real)
    api(real, "PATCH", ONE, json={"entries": {"A": "1"}})
    before = values(real)

    result = real_cli(
        "set", "put", "openai/prod/default", "--key", "A", "--expect-version", "1", input="v"
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("error: secret set openai/prod/default is at version 2, ")
    assert result.stderr.endswith(" (HTTP 409 conflict)\n")
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert values(real) == before
    assert api(real, "GET", ONE)["version"] == 2


def test_put_with_nothing_to_change_is_refused(real_cli: Cli, real: RealKeyfob):
    result = real_cli("set", "put", "openai/prod/default", tty=True)

    assert result.exit_code == 1
    assert "nothing to change" in result.stderr
    assert real.requests == []


# --- reading --------------------------------------------------------------------------------


def test_list_follows_cursors_and_shows_a_table(real_cli: Cli, real: RealKeyfob):
    # One more set than a server page holds (100), so the CLI must follow next_cursor.
    for n in range(101):
        make(real, f"openai/prod/s{n:03d}")
    api(real, "PATCH", "/v1/secret-sets/openai/prod/s000", json={"labels": {"team": "ml"}})
    make(real, "stripe/prod/billing", {"STRIPE_KEY": "sk_live_1"})
    api(real, "DELETE", "/v1/secret-sets/stripe/prod/billing")
    deleted = view(real, "stripe/prod/billing")
    assert deleted is not None

    result = real_cli("set", "list", "--provider", "openai")
    every = real_cli("set", "list", "--include-deleted")
    labelled = real_cli("set", "list", "--label", "team=ml")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PATH", "VERSION", "KEYS", "UPDATED", "DELETED"]
    assert len(lines) == 102
    assert lines[1].split()[:3] == ["openai/prod/s000", "2", "OPENAI_API_KEY"]
    assert "stripe/prod/billing" not in result.stdout
    assert len(real.calls("GET", SETS)) >= 2
    (row,) = [line for line in every.stdout.splitlines() if "stripe/prod/billing" in line]
    assert deleted["deleted_at"][:10] in row
    assert [line.split()[0] for line in labelled.stdout.splitlines()[1:]] == ["openai/prod/s000"]


def test_list_json_is_all_items(real_cli: Cli, real: RealKeyfob):
    assert json.loads(real_cli("set", "list", "--json").stdout) == {"items": []}
    assert real_cli("set", "list").stdout == "no secret sets\n"
    make(real)

    result = real_cli("set", "list", "--json")

    assert json.loads(result.stdout)["items"] == api(real, "GET", SETS)["items"]
    assert [item["path"] for item in json.loads(result.stdout)["items"]] == ["openai/prod/default"]


def test_show_prints_fingerprints_and_profile(real_cli: Cli, real: RealKeyfob):
    make(real, profile={"preset": "openai"})
    api(real, "PATCH", ONE, json={"labels": {"team": "ml"}, "entries": {"B": "b"}})
    shown = api(real, "GET", ONE)

    result = real_cli("set", "show", "openai/prod/default")

    assert result.exit_code == 0, result.output
    assert f"version:   {shown['version']}" in result.stdout
    assert "team=ml" in result.stdout
    assert f"upstream:  {shown['profile']['base_url']}" in result.stdout
    for key in shown["keys"]:
        assert key["fingerprint"] in result.stdout
    assert json.loads(real_cli("set", "show", "openai/prod/default", "--json").stdout) == shown


def test_missing_set_is_one_line_on_stderr(real_cli: Cli, real: RealKeyfob):
    with real.http() as http:
        detail = http.get(ONE).json()["detail"]

    result = real_cli("set", "show", "openai/prod/default")

    assert result.exit_code == 1
    assert result.stderr == f"error: {detail} (HTTP 404 not-found)\n"
    assert "openai/prod/default" in detail
    assert "Traceback" not in result.output


def test_versions_table(real_cli: Cli, real: RealKeyfob):
    make(real)
    api(real, "PATCH", ONE, json={"entries": {"B": "b"}})
    api(real, "POST", ONE + "/rollback", json={"version": 1})

    result = real_cli("set", "versions", "openai/prod/default")

    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["3", "2", "1"]
    assert "rollback of 1" in result.stdout
    assert result.stdout.index("rollback of 1") < result.stdout.index("create")
    assert json.loads(real_cli("set", "versions", "openai/prod/default", "--json").stdout) == api(
        real, "GET", ONE + "/versions"
    )


# --- lifecycle ------------------------------------------------------------------------------


def test_rollback_sends_version_and_expected_version(real_cli: Cli, real: RealKeyfob):
    make(real, entries={"OPENAI_API_KEY": "sk-one"})
    api(real, "PATCH", ONE, json={"entries": {"OPENAI_API_KEY": "sk-two"}})
    api(real, "PATCH", ONE, json={"entries": {"OPENAI_API_KEY": "sk-three"}})

    stale = real_cli("set", "rollback", "openai/prod/default", "1", "--expect-version", "2")
    assert stale.exit_code == 1
    assert stale.stderr.endswith(" (HTTP 409 conflict)\n")
    assert values(real) == {"OPENAI_API_KEY": "sk-three"}

    result = real_cli(
        "set", "rollback", "openai/prod/default", "2", "--expect-version", "3", "--json"
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == 4
    assert values(real) == {"OPENAI_API_KEY": "sk-two"}


def test_delete_and_restore(real_cli: Cli, real: RealKeyfob):
    make(real)

    deleted = real_cli("set", "delete", "openai/prod/default")
    gone = view(real)
    restored = real_cli("set", "restore", "openai/prod/default")

    assert "deleted openai/prod/default" in deleted.stdout
    assert gone is not None
    assert gone["deleted_at"] is not None
    shown = view(real)
    assert shown is not None
    assert shown["deleted_at"] is None
    assert f"restored openai/prod/default at version {shown['version']}" in restored.stdout


def test_purge_without_terminal_or_yes_is_refused(real_cli: Cli, real: RealKeyfob):
    make(real)
    real.requests.clear()

    result = real_cli("set", "purge", "openai/prod/default", input="y\n")

    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert real.requests == []
    assert view(real) is not None


def test_purge_asks_on_a_terminal_and_no_means_no(real_cli: Cli, real: RealKeyfob):
    make(real)
    real.requests.clear()

    result = real_cli("set", "purge", "openai/prod/default", input="n\n", tty=True)

    assert result.exit_code == 1
    assert "cannot be undone" in result.output
    assert real.requests == []
    assert view(real) is not None


def deleted_with_versions(real: RealKeyfob) -> None:
    """A soft-deleted set with three versions (purge takes only deleted sets)."""
    make(real)
    api(real, "PATCH", ONE, json={"entries": {"B": "b"}})
    api(real, "PATCH", ONE, json={"entries": {"C": "c"}})
    api(real, "DELETE", ONE)


def test_purge_asks_on_a_terminal_and_yes_purges(real_cli: Cli, real: RealKeyfob):
    deleted_with_versions(real)

    result = real_cli("set", "purge", "openai/prod/default", input="y\n", tty=True)

    assert result.exit_code == 0, result.output
    assert len(real.calls("POST", ONE + "/purge")) == 1
    assert "purged openai/prod/default (3 versions)" in result.stdout
    assert view(real) is None


def test_purge_with_yes_does_not_ask(real_cli: Cli, real: RealKeyfob):
    deleted_with_versions(real)

    result = real_cli("set", "purge", "openai/prod/default", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"purged": "openai/prod/default", "versions": 3}
    assert view(real) is None


def test_put_can_change_profile_and_labels_without_reading_stdin(real_cli: Cli, real: RealKeyfob):
    make(real, "openai/prod/default", {"OPENAI_API_KEY": "sk-keep"})
    before = values(real)

    result = real_cli(
        "set",
        "put",
        "openai/prod/default",
        "--preset",
        "openai",
        "--label",
        "team=ml",
        input="IGNORED=1\n",
    )

    assert result.exit_code == 0, result.output
    shown = view(real)
    assert shown is not None
    assert shown["labels"] == {"team": "ml"}
    assert shown["profile"]["preset"] == "openai"
    assert values(real) == before  # IGNORED was not read
