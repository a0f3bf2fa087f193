"""Printing: ``--json`` writes machine JSON to stdout; otherwise short Rich tables and lines.

Everything shown here comes from server views, which never carry secret values; a
freshly created token goes through ``show_new_token`` alone, and the one command that
prints secret values (``set export``) writes them itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyfob.clock import parse_iso

if TYPE_CHECKING:
    # Imported by the functions that draw: a command that prints lines or JSON skips Rich.
    from rich.console import Console

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of text.")
]


def _console() -> Console:
    from rich.console import Console

    # Built per call so it writes to whatever sys.stdout is now (CliRunner swaps it).
    console = Console(highlight=False, emoji=False)
    if not console.is_terminal:
        # Piped into grep or awk: one row per line beats fitting an imaginary 80 columns.
        console.width = 1000
    return console


def print_json(data: Any) -> None:
    """One JSON document, indented, on stdout."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_json_line(data: Any) -> None:
    """One JSON document on one line (JSONL streams such as ``audit tail``)."""
    typer.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def print_line(text: str) -> None:
    """A plain line: no Rich markup is interpreted, so names cannot inject styling."""
    typer.echo(text)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[str]], *, header: bool = True
) -> None:
    """A compact table; long cells fold rather than being cut, so ids stay copyable."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False, show_header=header)
    for index, column in enumerate(columns):
        # The first column is the handle (path, id, seq) a user copies: never split it.
        table.add_column(column, overflow="fold", no_wrap=index == 0)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    _console().print(table)


def print_fields(pairs: Sequence[tuple[str, str]]) -> None:
    """Aligned ``label  value`` lines for one object."""
    width = max((len(label) for label, _ in pairs), default=0)
    for label, value in pairs:
        typer.echo(f"{label + ':':<{width + 1}}  {value}")


def show_new_token(token: str, what: str) -> None:
    """Print a newly created token once, with the warning that it will not be shown again."""
    typer.echo(f"{what} (store it now, you will not see it again):")
    typer.echo(token)


def when(value: object) -> str:
    """A server timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC, or ``-`` when absent."""
    if not value:
        return "-"
    try:
        return parse_iso(str(value), bounded=False).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


def joined(values: object, empty: str = "-") -> str:
    """A list as ``a, b, c``; ``empty`` when there is nothing."""
    if not isinstance(values, list) or not values:
        return empty
    return ", ".join(str(value) for value in values)


def labels_text(labels: object) -> str:
    """Labels as ``k=v, k=v``."""
    if not isinstance(labels, dict) or not labels:
        return "-"
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
