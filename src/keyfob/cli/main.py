"""The ``keyfob`` Typer app: global options, command wiring, and one place that reports errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from keyfob import __version__
from keyfob.cli import (
    agents,
    audit,
    backups,
    ca,
    grants,
    keys,
    leases,
    mcp,
    me,
    run,
    server,
    sets,
    tokens,
    usage,
    users,
)
from keyfob.cli.context import CliState, Wiring, state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line
from keyfob.errors import KeyfobError


class KeyfobGroup(TyperGroup):
    """Root group: a ``CliError`` or ``KeyfobError`` becomes one line on stderr and exit 1."""

    # ``Any``: the parameter's declared type lives in typer's private vendored click.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (CliError, KeyfobError) as exc:
            message = exc.message if isinstance(exc, CliError) else " ".join(exc.detail.split())
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None


def version(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Print the keyfob version."""
    state(ctx)  # as every command, refuses a bad KEYFOB_* variable (``--version`` does not)
    if json_out:
        print_json({"version": __version__})
    else:
        print_line(f"keyfob {__version__}")


def _print_version(value: bool) -> None:
    if value:
        print_line(f"keyfob {__version__}")
        raise typer.Exit()


def create_app() -> typer.Typer:
    """A fresh ``keyfob`` app. Tests pass a ``Wiring`` (a mock transport, fakes) as the
    click context's ``obj`` (``main(obj=...)``), so one built command serves every run."""
    app = typer.Typer(
        name="keyfob",
        cls=KeyfobGroup,
        help="keyfob: a credential vault for AI agents.",
        no_args_is_help=True,
        add_completion=False,
        # Pretty tracebacks can render local variables, and locals here hold tokens.
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        addr: Annotated[
            str | None,
            typer.Option(
                metavar="URL",
                help="keyfob server URL (default KEYFOB_ADDR, http://127.0.0.1:8200).",
            ),
        ] = None,
        token_file: Annotated[
            Path | None,
            typer.Option(
                "--token-file",
                metavar="PATH",
                help="Read the token (operator, or agent for lease mint) from PATH, "
                "not KEYFOB_TOKEN.",
            ),
        ] = None,
        _version: Annotated[
            bool,
            typer.Option(
                "--version",
                is_eager=True,
                callback=_print_version,
                help="Print the keyfob version and exit.",
            ),
        ] = False,
    ) -> None:
        # The settings are read when a command runs (``state``): not for its --help.
        seams = ctx.obj if isinstance(ctx.obj, Wiring) else Wiring()
        cli = CliState(wiring=seams, addr_option=addr, token_file=token_file)
        ctx.obj = cli
        ctx.call_on_close(cli.close)

    app.command("init")(server.init)
    app.command("serve")(server.serve)
    app.add_typer(sets.app)
    app.add_typer(agents.app)
    app.add_typer(grants.app)
    app.add_typer(leases.app)
    app.add_typer(me.app)
    app.add_typer(audit.app)
    app.add_typer(keys.app)
    app.add_typer(ca.app)
    app.add_typer(tokens.app)
    app.add_typer(users.app)
    app.command("mcp")(mcp.mcp)
    # Options stop at CMD: `keyfob run --set P/E/N python app.py -v` passes -v to python.
    app.command("run", context_settings={"allow_interspersed_args": False})(run.run)
    app.command("usage")(usage.usage)
    app.add_typer(usage.prices)
    app.command("backup")(backups.backup)
    app.command("restore")(backups.restore)
    app.add_typer(backups.db)
    app.command("version")(version)
    return app


def main() -> None:
    """Console-script entry point."""
    create_app()()


if __name__ == "__main__":
    main()
