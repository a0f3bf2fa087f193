"""``keyfob set export``: the one command that prints secret values, deliberately.

It needs a lease (``KEYFOB_LEASE`` or stdin, never argv) whose grant allows ``export``;
the server audits every export and marks the set ``exported_at``. Values go to stdout
only, as dotenv lines or (``--json``) the server's JSON. A terminal is refused unless
``--show`` is given: values on a screen end up in scrollback, recordings and screen shares.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from keyfob.cli.context import state
from keyfob.cli.entries import KEY_NAME, check_key_names
from keyfob.cli.errors import CliError
from keyfob.cli.output import print_json
from keyfob.cli.paths import set_url

_BARE = re.compile(r"^[A-Za-z0-9_./:@%+,=-]+$")
_DOUBLE_QUOTED = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def dotenv_line(name: str, value: str) -> str:
    """``NAME=value``, quoted so ``set create`` (and common dotenv readers) read it back."""
    if _BARE.match(value):
        return f"{name}={value}"
    if len(("." + value.replace("\n", "").replace("\r", "") + ".").splitlines()) > 1:
        # Other line breaks (\\x0b, \\x85, \\u2028, …) have no dotenv escape.
        raise CliError(f"the value of {name} has a line break dotenv cannot carry; use --json")
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"{name}='{value}'"
    return f'{name}="{"".join(_DOUBLE_QUOTED.get(char, char) for char in value)}"'


def export(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="P/E/N", help="provider/environment/name")],
    key: Annotated[
        list[str] | None,
        typer.Option("--key", metavar="NAME", help="Only this key (repeatable; default all)."),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Print the values even though stdout is a terminal.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help='Print {"secret_set", "entries": {KEY: value}}.')
    ] = False,
) -> None:
    """PRINT SECRET VALUES (dotenv lines) using a lease whose grant allows export."""
    cli = state(ctx)
    keys = key or []
    check_key_names(keys)
    url = set_url(path, "/export")
    # Before the lease is read or sent: a refused export must not use it up.
    if cli.wiring.stdout_is_tty() and not show:
        raise CliError(
            "refusing to print secret values to a terminal: redirect stdout "
            "(keyfob set export … > .env) or pass --show"
        )
    answer = cli.lease_client().post(url, {"keys": keys} if keys else {})
    entries = answer.get("entries")
    if not isinstance(entries, dict) or not all(
        isinstance(name, str) and KEY_NAME.match(name) and isinstance(value, str)
        for name, value in entries.items()
    ):
        raise CliError("the server's export answer has no usable entries")
    if json_out:
        print_json(answer)
        return
    # Every line is built before any is printed: all of the export, or none of it.
    lines = [dotenv_line(name, value) for name, value in entries.items()]
    for line in lines:
        typer.echo(line)
