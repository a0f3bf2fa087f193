"""docs/cli.md documents every command the CLI has, and every command has --json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from keyfob.cli.main import create_app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def commands(group: Any, prefix: str = "keyfob") -> Iterator[tuple[str, Any]]:
    # Any: typer builds these from its own vendored click, not the click package.
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


ALL = dict(commands(typer.main.get_group(create_app())))


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_command_has_a_heading_in_the_docs(name: str):
    headings = [line for line in DOCS.read_text().splitlines() if line.startswith("### ")]
    assert any(f"`{name}`" in line or f"`{name} " in line for line in headings), name


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_command_has_json(name: str):
    options = {opt for param in ALL[name].params for opt in getattr(param, "opts", [])}
    assert "--json" in options, name
