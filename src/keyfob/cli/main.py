"""The ``keyfob`` Typer app: global options, command wiring, and one place that reports errors."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.main import get_group

from keyfob import __version__
from keyfob.cli.context import CliState, Wiring, state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line
from keyfob.errors import KeyfobError

# The commands under the root, in the order ``keyfob --help`` lists them (typer lists
# single commands before groups): its name, the module that holds it and the attribute
# there (a ``typer.Typer`` is a command group; a function is one command).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("init", "keyfob.cli.server", "init"),
    ("serve", "keyfob.cli.server", "serve"),
    ("mcp", "keyfob.cli.mcp", "mcp"),
    ("run", "keyfob.cli.run", "run"),
    ("usage", "keyfob.cli.usage", "usage"),
    ("backup", "keyfob.cli.backups", "backup"),
    ("restore", "keyfob.cli.backups", "restore"),
    ("version", __name__, "version"),
    ("set", "keyfob.cli.sets", "app"),
    ("agent", "keyfob.cli.agents", "app"),
    ("grant", "keyfob.cli.grants", "app"),
    ("lease", "keyfob.cli.leases", "app"),
    ("me", "keyfob.cli.me", "app"),
    ("audit", "keyfob.cli.audit", "app"),
    ("keys", "keyfob.cli.keys", "app"),
    ("ca", "keyfob.cli.ca", "app"),
    ("token", "keyfob.cli.tokens", "app"),
    ("user", "keyfob.cli.users", "app"),
    ("prices", "keyfob.cli.usage", "prices"),
    ("db", "keyfob.cli.backups", "db"),
)
# Options stop at CMD: `keyfob run --set P/E/N python app.py -v` passes -v to python.
_CONTEXT_SETTINGS: dict[str, dict[str, Any]] = {"run": {"allow_interspersed_args": False}}


def _build(name: str, module: str, attribute: str) -> Any:
    """One root command, imported and built as typer builds it under the root."""
    target = getattr(import_module(module), attribute)
    scratch = typer.Typer(add_completion=False)
    if isinstance(target, typer.Typer):
        scratch.add_typer(target)
    else:
        scratch.command(name, context_settings=_CONTEXT_SETTINGS.get(name))(target)
    return get_group(scratch).commands[name]


class _Commands(MutableMapping[str, Any]):
    """The root's commands, each imported and built on first look-up.

    Building a command reads the signatures and type hints of every function under it, and
    importing its module pulls in what that module needs; a run needs one of them (``--help``
    lists them all and so builds them all)."""

    def __init__(self, built: MutableMapping[str, Any]) -> None:
        self._built = dict(built)
        self._where = {name: (module, attribute) for name, module, attribute in COMMANDS}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            module, attribute = self._where[name]  # KeyError: no such command
            try:
                self._built[name] = _build(name, module, attribute)
            except KeyError as exc:  # not "no such command": `get` would say so
                raise RuntimeError(f"cannot build the {name!r} command") from exc
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        self._built.pop(name, None)
        self._where.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        yield from self._where
        yield from (name for name in self._built if name not in self._where)

    def __len__(self) -> int:
        return len(self._where.keys() | self._built.keys())


class KeyfobGroup(TyperGroup):
    """Root group: a ``CliError`` or ``KeyfobError`` becomes one line on stderr and exit 1;
    its commands are imported and built when a run looks them up (``_Commands``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.commands)

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

    return app


def main() -> None:
    """Console-script entry point."""
    create_app()()


if __name__ == "__main__":
    main()
