"""The grant-constraint spec is the one list: every edge and both docs carry every entry."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import typer

from keyfob.api.models import GrantCreate, GrantFields
from keyfob.cli.main import create_app
from keyfob.constraints import CONSTRAINTS, Constraint
from keyfob.store.records import GrantRow
from keyfob.vault.views import GrantView, MyGrantView
from tests.support.docs import API_DOC

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
IDS = [c.name for c in CONSTRAINTS]


def _grant_command(name: str) -> object:
    group = typer.main.get_group(create_app())
    return group.commands["grant"].commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("c", CONSTRAINTS, ids=IDS)
def test_api_docs_name_every_constraint(c: Constraint) -> None:
    assert f"`{c.name}`" in API_DOC.read_text(), f"docs/api.md does not mention {c.name}"


@pytest.mark.parametrize("c", CONSTRAINTS, ids=IDS)
def test_cli_docs_name_every_flag(c: Constraint) -> None:
    text = CLI_DOC.read_text()
    assert f"`{c.flag} " in text or f"`{c.flag}`" in text, f"docs/cli.md lacks {c.flag}"
    assert f"`{c.name}`" in text, f"docs/cli.md does not map {c.flag} to {c.name}"


def test_the_api_body_is_the_spec() -> None:
    names = [c.name for c in CONSTRAINTS]
    assert list(GrantFields.model_fields) == names
    assert set(GrantCreate.model_fields) == {*names, "agent", "secret_set"}


@pytest.mark.parametrize("command", ["create", "update"])
def test_the_cli_options_are_the_spec(command: str) -> None:
    params = {p.name: p for p in _grant_command(command).params}  # type: ignore[attr-defined]
    for c in CONSTRAINTS:
        assert params[c.name].opts == [c.flag]
        assert params[c.name].multiple == c.is_list


@pytest.mark.parametrize("shape", [GrantView, MyGrantView, GrantRow])
def test_grant_views_and_rows_carry_every_constraint(shape: type) -> None:
    """The typed view restates the names for mypy's sake; this keeps it in step."""
    names = [c.name for c in CONSTRAINTS]
    assert [f.name for f in fields(shape) if f.name in names] == names


def test_defaults_are_least_privilege() -> None:
    by_name = {c.name: c for c in CONSTRAINTS}
    assert by_name["actions"].default == ("proxy",)
    assert by_name["scopes"].default == ("request",)
    assert by_name["approval"].default == "none"
    assert by_name["max_lease_ttl"].default == 900
