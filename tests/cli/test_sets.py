"""``keyfob set …`` against a fake API: request bodies, value sources, output, confirmation."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from .conftest import Cli, FakeKeyfob, problem, set_view

SETS = "/v1/secret-sets"
ONE = "/v1/secret-sets/openai/prod/default"


@pytest.fixture
def created(api: FakeKeyfob) -> FakeKeyfob:
    api.on("POST", SETS, set_view(), status=201)
    return api


# --- create: where values come from -------------------------------------------------------


def test_create_reads_single_key_value_from_piped_stdin(cli: Cli, created: FakeKeyfob, canary: str):
    result = cli(
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
    (body,) = created.bodies("POST", SETS)
    assert body == {
        "provider": "openai",
        "environment": "prod",
        "name": "default",
        "entries": {"OPENAI_API_KEY": canary},
        "labels": {"team": "ml"},
        "profile": {"preset": "openai"},
    }
    assert canary not in result.output
    assert "created openai/prod/default at version 1 (OPENAI_API_KEY)" in result.stdout


def test_create_strips_exactly_one_trailing_newline(cli: Cli, created: FakeKeyfob):
    cli("set", "create", "openai/prod/default", "--key", "PEM", input="line1\nline2\n\n")

    assert created.bodies("POST", SETS)[0]["entries"] == {"PEM": "line1\nline2\n"}


def test_create_prompts_with_hidden_input_on_a_terminal(cli: Cli, created: FakeKeyfob, canary: str):
    result = cli(
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
    assert created.bodies("POST", SETS)[0]["entries"] == {"A": f"{canary}-a", "B": f"{canary}-b"}
    assert "Value for A (hidden)" in result.output
    assert canary not in result.output  # hidden input is not echoed


def test_create_reads_dotenv_lines_from_stdin_without_key(cli: Cli, created: FakeKeyfob):
    stdin = "# billing bot\nexport STRIPE_KEY=sk_live_1\nSTRIPE_WEBHOOK='whsec x'\n\n"

    result = cli("set", "create", "stripe/prod/billing", input=stdin)

    assert result.exit_code == 0, result.output
    assert created.bodies("POST", SETS)[0]["entries"] == {
        "STRIPE_KEY": "sk_live_1",
        "STRIPE_WEBHOOK": "whsec x",
    }


def test_create_reads_a_json_object_from_stdin(cli: Cli, created: FakeKeyfob):
    cli("set", "create", "stripe/prod/billing", input='{"A": "1", "B": "2"}')

    assert created.bodies("POST", SETS)[0]["entries"] == {"A": "1", "B": "2"}


def test_create_reads_env_file(cli: Cli, created: FakeKeyfob, tmp_path: Path, canary: str):
    env_file = tmp_path / "prod.env"
    env_file.write_text(f"OPENAI_API_KEY={canary}\nOPENAI_ORG=org-1\n")

    result = cli("set", "create", "openai/prod/default", "--env-file", str(env_file), "--json")

    assert result.exit_code == 0, result.output
    assert created.bodies("POST", SETS)[0]["entries"] == {
        "OPENAI_API_KEY": canary,
        "OPENAI_ORG": "org-1",
    }
    assert json.loads(result.stdout)["path"] == "openai/prod/default"
    assert canary not in result.output


def test_create_refuses_name_equals_value_without_echoing_it(
    cli: Cli, api: FakeKeyfob, canary: str
):
    result = cli("set", "create", "openai/prod/default", "--key", f"OPENAI_API_KEY={canary}")

    assert result.exit_code == 1
    assert "never the command line" in result.stderr
    assert canary not in result.output
    assert api.requests == []


def test_there_is_no_option_that_takes_a_value(cli: Cli, api: FakeKeyfob, canary: str):
    result = cli("set", "create", "openai/prod/default", "--value", canary)

    assert result.exit_code == 2
    assert api.requests == []


def test_several_keys_without_a_terminal_are_refused(cli: Cli, api: FakeKeyfob):
    result = cli("set", "create", "openai/prod/default", "--key", "A", "--key", "B", input="x\n")

    assert result.exit_code == 1
    assert "cannot be prompted" in result.stderr
    assert api.requests == []


@pytest.mark.parametrize("stdin", ["", "\n", "A=\n", '{"A": ""}'])
def test_empty_values_are_refused_client_side(cli: Cli, api: FakeKeyfob, stdin: str):
    args = ["set", "create", "openai/prod/default"]
    if stdin in ("", "\n"):
        args += ["--key", "A"]

    result = cli(*args, input=stdin)

    assert result.exit_code == 1
    assert "empty" in result.stderr
    assert api.requests == []


def test_create_with_nothing_to_store_on_a_terminal_says_how(cli: Cli, api: FakeKeyfob):
    result = cli("set", "create", "openai/prod/default", tty=True)

    assert result.exit_code == 1
    assert "--key NAME" in result.stderr
    assert api.requests == []


def test_malformed_dotenv_line_names_the_line_not_the_content(cli: Cli, api: FakeKeyfob):
    result = cli("set", "create", "openai/prod/default", input="A=1\nsk-secret-no-equals\n")

    assert result.exit_code == 1
    assert "stdin line 2" in result.stderr
    assert "sk-secret" not in result.output
    assert api.requests == []


def test_profile_file_is_sent_as_the_profile(cli: Cli, created: FakeKeyfob, tmp_path: Path):
    profile = {
        "base_url": "https://api.example.com",
        "hosts": ["api.example.com"],
        "inject": {"kind": "header", "header": "X-Api-Key", "key": "K"},
    }
    (tmp_path / "p.json").write_text(json.dumps(profile))

    cli(
        "set",
        "create",
        "example/dev/main",
        "--profile-file",
        str(tmp_path / "p.json"),
        input="K=v\n",
    )

    assert created.bodies("POST", SETS)[0]["profile"] == profile


def test_preset_and_profile_file_together_are_refused(cli: Cli, api: FakeKeyfob):
    result = cli(
        "set", "create", "a/b/c", "--preset", "openai", "--profile-file", "p.json", input="K=v\n"
    )

    assert result.exit_code == 1
    assert "not both" in result.stderr


@pytest.mark.parametrize("path", ["openai/prod", "OpenAI/prod/x", "a/b/c/d", "a/../b"])
def test_bad_set_paths_are_refused(cli: Cli, api: FakeKeyfob, path: str):
    result = cli("set", "show", path)

    assert result.exit_code == 1
    assert "provider/environment/name" in result.stderr
    assert api.requests == []


# --- put ------------------------------------------------------------------------------------


def test_put_sends_new_values_removals_and_expected_version(cli: Cli, api: FakeKeyfob):
    api.on("PATCH", ONE, set_view(version=4, keys=("NEW",)))

    result = cli(
        "set",
        "put",
        "openai/prod/default",
        "--key",
        "NEW",
        "--remove",
        "OLD",
        "--expect-version",
        "3",
        input="v\n",
    )

    assert result.exit_code == 0, result.output
    assert api.bodies("PATCH", ONE) == [
        {"entries": {"NEW": "v", "OLD": None}, "expected_version": 3}
    ]
    assert "updated openai/prod/default at version 4" in result.stdout


def test_put_with_only_remove_does_not_wait_for_stdin(cli: Cli, api: FakeKeyfob):
    api.on("PATCH", ONE, set_view(version=2))

    result = cli("set", "put", "openai/prod/default", "--remove", "OLD", input="IGNORED=1\n")

    assert result.exit_code == 0, result.output
    assert api.bodies("PATCH", ONE) == [{"entries": {"OLD": None}}]


def test_put_lost_update_is_reported_as_conflict(cli: Cli, api: FakeKeyfob):
    api.on("PATCH", ONE, lambda _r: problem(409, "conflict", "set is at version 5, not 3"))

    result = cli(
        "set", "put", "openai/prod/default", "--key", "A", "--expect-version", "3", input="v"
    )

    assert result.exit_code == 1
    assert result.stderr == "error: set is at version 5, not 3 (HTTP 409 conflict)\n"
    assert result.stdout == ""


def test_put_with_nothing_to_change_is_refused(cli: Cli, api: FakeKeyfob):
    result = cli("set", "put", "openai/prod/default", tty=True)

    assert result.exit_code == 1
    assert "nothing to change" in result.stderr
    assert api.requests == []


# --- reading --------------------------------------------------------------------------------


def test_list_follows_cursors_and_shows_a_table(cli: Cli, api: FakeKeyfob):
    pages = {
        None: {"items": [set_view("openai/prod/default", 3)], "next_cursor": "c2"},
        "c2": {
            "items": [
                set_view(
                    "stripe/prod/billing", 1, ("STRIPE_KEY",), deleted_at="2026-11-25T00:00:00Z"
                )
            ],
            "next_cursor": None,
        },
    }
    api.on("GET", SETS, lambda r: httpx.Response(200, json=pages[r.url.params.get("cursor")]))

    result = cli("set", "list", "--provider", "openai", "--label", "team=ml", "--include-deleted")

    assert result.exit_code == 0, result.output
    first = api.calls("GET", SETS)[0].url.params
    assert first["provider"] == "openai"
    assert first.get_list("label") == ["team:ml"]
    assert first["include_deleted"] == "true"
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PATH", "VERSION", "KEYS", "UPDATED", "DELETED"]
    assert lines[1].split()[:3] == ["openai/prod/default", "3", "OPENAI_API_KEY"]
    assert "2026-11-25 00:00:00" in lines[2]


def test_list_json_is_all_items(cli: Cli, api: FakeKeyfob):
    api.on("GET", SETS, {"items": [set_view()], "next_cursor": None})

    result = cli("set", "list", "--json")

    assert [item["path"] for item in json.loads(result.stdout)["items"]] == ["openai/prod/default"]


def test_show_prints_fingerprints_and_profile(cli: Cli, api: FakeKeyfob):
    api.on("GET", ONE, set_view(version=3, labels={"team": "ml"}))

    result = cli("set", "show", "openai/prod/default")

    assert result.exit_code == 0, result.output
    assert "version:   3" in result.stdout
    assert "team=ml" in result.stdout
    assert "https://api.openai.com" in result.stdout
    assert "hmac-sha256:1a2b3c4d5e6f" in result.stdout


def test_missing_set_is_one_line_on_stderr(cli: Cli, api: FakeKeyfob):
    api.on(
        "GET",
        ONE,
        lambda _r: problem(
            404, "not-found", "secret set openai/prod/default does not exist", request_id="r1"
        ),
    )

    result = cli("set", "show", "openai/prod/default")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: secret set openai/prod/default does not exist (HTTP 404 not-found)\n"
    )
    assert "Traceback" not in result.output


def test_versions_table(cli: Cli, api: FakeKeyfob):
    api.on(
        "GET",
        ONE + "/versions",
        {
            "items": [
                {
                    "version": 3,
                    "created_at": "2026-11-24T05:00:00Z",
                    "actor": "operator:ci",
                    "reason": "rollback",
                    "rollback_of": 1,
                    "keys": ["A"],
                    "kek_term": 2,
                },
                {
                    "version": 1,
                    "created_at": "2026-11-24T04:00:00Z",
                    "actor": "operator:ci",
                    "reason": "create",
                    "rollback_of": None,
                    "keys": ["A"],
                    "kek_term": 1,
                },
            ]
        },
    )

    result = cli("set", "versions", "openai/prod/default")

    assert result.exit_code == 0, result.output
    assert "rollback of 1" in result.stdout
    assert result.stdout.index("rollback of 1") < result.stdout.index("create")


# --- lifecycle ------------------------------------------------------------------------------


def test_rollback_sends_version_and_expected_version(cli: Cli, api: FakeKeyfob):
    api.on("POST", ONE + "/rollback", set_view(version=4))

    result = cli("set", "rollback", "openai/prod/default", "2", "--expect-version", "3", "--json")

    assert api.bodies("POST", ONE + "/rollback") == [{"version": 2, "expected_version": 3}]
    assert json.loads(result.stdout)["version"] == 4


def test_delete_and_restore(cli: Cli, api: FakeKeyfob):
    api.on("DELETE", ONE, set_view(deleted_at="2026-11-24T06:00:00Z"))
    api.on("POST", ONE + "/restore", set_view(version=2))

    deleted = cli("set", "delete", "openai/prod/default")
    restored = cli("set", "restore", "openai/prod/default")

    assert "deleted openai/prod/default" in deleted.stdout
    assert "restored openai/prod/default at version 2" in restored.stdout


def test_purge_without_terminal_or_yes_is_refused(cli: Cli, api: FakeKeyfob):
    result = cli("set", "purge", "openai/prod/default", input="y\n")

    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert api.requests == []


def test_purge_asks_on_a_terminal_and_no_means_no(cli: Cli, api: FakeKeyfob):
    result = cli("set", "purge", "openai/prod/default", input="n\n", tty=True)

    assert result.exit_code == 1
    assert "cannot be undone" in result.output
    assert api.requests == []


def test_purge_asks_on_a_terminal_and_yes_purges(cli: Cli, api: FakeKeyfob):
    api.on("POST", ONE + "/purge", {"purged": "openai/prod/default", "versions": 3})

    result = cli("set", "purge", "openai/prod/default", input="y\n", tty=True)

    assert result.exit_code == 0, result.output
    assert len(api.calls("POST", ONE + "/purge")) == 1
    assert "purged openai/prod/default (3 versions)" in result.stdout


def test_purge_with_yes_does_not_ask(cli: Cli, api: FakeKeyfob):
    api.on("POST", ONE + "/purge", {"purged": "openai/prod/default", "versions": 3})

    result = cli("set", "purge", "openai/prod/default", "--yes", "--json")

    assert json.loads(result.stdout) == {"purged": "openai/prod/default", "versions": 3}


def test_put_can_change_profile_and_labels_without_reading_stdin(cli: Cli, api: FakeKeyfob):
    api.on("PATCH", ONE, set_view(version=1))

    result = cli(
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
    assert api.bodies("PATCH", ONE) == [
        {"entries": {}, "profile": {"preset": "openai"}, "labels": {"team": "ml"}}
    ]
