"""The real ``keyfob`` CLI run in this process, its click command built once per process.

``typer.testing.CliRunner.invoke`` builds the click command from the Typer app on every
call: a signature and type hints for each of keyfob's commands, ~30 ms of CPU. The suite
runs the CLI in-process well over a thousand times. ``invoke`` runs one command object
every time, in the same isolation (``CliRunner.isolation``: stdin, stdout, stderr and
the environment swapped), and answers the same ``Result``. Seams (a mock transport, a
fake clock) go in as the click context's ``obj``, which the root callback reads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache
from typing import Any

from typer.main import get_command
from typer.testing import CliRunner, Result

from keyfob.cli.context import Wiring
from keyfob.cli.main import create_app


@cache
def _command() -> Any:  # typer's vendored click.Command
    return get_command(create_app())


def invoke(
    args: Sequence[str],
    *,
    wiring: Wiring | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    catch_exceptions: bool = True,
) -> Result:
    """``keyfob ARGS``; as ``CliRunner().invoke(create_app(), ARGS, ...)`` answers it."""
    runner = CliRunner()
    command = _command()
    exit_code, exception, exc_info = 0, None, None
    with runner.isolation(input=input, env=env) as (stdout, stderr, output):
        try:
            command.main(args=list(args), prog_name="keyfob", obj=wiring)
        except SystemExit as stopped:
            # What CliRunner.invoke makes of an exit code.
            exc_info = sys.exc_info()
            code = 0 if stopped.code is None else stopped.code
            if code != 0:
                exception = stopped
            if not isinstance(code, int):
                sys.stdout.write(f"{code}\n")
                code = 1
            exit_code = code
        except Exception as error:
            if not catch_exceptions:
                raise
            exception, exit_code, exc_info = error, 1, sys.exc_info()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return Result(
            runner=runner,
            stdout_bytes=stdout.getvalue(),
            stderr_bytes=stderr.getvalue(),
            output_bytes=output.getvalue(),
            return_value=None,
            exit_code=exit_code,
            exception=exception,
            exc_info=exc_info,
        )
