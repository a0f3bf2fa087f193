"""``keyfob user …``: people who sign in to the dashboard at ``/ui``.

A password never travels in argv: it is asked twice at a hidden prompt when stdin is a
terminal, otherwise read from the first line of stdin. It is checked for length here,
sent once over the operator client, and never printed.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keyfob.cli.context import CliState, state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line, print_table, when
from keyfob.cli.paths import segment
from keyfob.secret import Secret

MIN_PASSWORD = 12  # the server's rule too (keyfob.vault.users); refused here before sending
MAX_PASSWORD = 1024

app = typer.Typer(
    name="user",
    help="Dashboard users: create, list, disable, enable, passwd, delete.",
    no_args_is_help=True,
)

UserRef = Annotated[str, typer.Argument(metavar="ID|NAME", help="The user's id or name.")]


def user_url(ref: str, suffix: str = "") -> str:
    """The API path of a user, by id or name."""
    return "/v1/users/" + segment(ref, "a user id or name", "keyfob user list") + suffix


def read_password(cli: CliState, done: str = "nothing was created") -> Secret[str]:
    """The new password: a hidden prompt asked twice on a terminal, else stdin's first line."""
    if cli.wiring.stdin_is_tty():
        first = typer.prompt("Password (hidden)", hide_input=True, err=True)
        second = typer.prompt("Repeat the password", hide_input=True, err=True)
        if first != second:
            raise CliError(f"the passwords did not match; {done}")
        text = first
    else:
        text = sys.stdin.readline().rstrip("\r\n")
    if not text:
        raise CliError("no password: type it at the prompt or pipe it on stdin (never argv)")
    if len(text) < MIN_PASSWORD:
        raise CliError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(text) > MAX_PASSWORD:
        raise CliError(f"the password is too long: use at most {MAX_PASSWORD} characters")
    return Secret(text)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The sign-in name: 1-64 of a-z, 0-9, '-' or '_'.")],
    json_out: JsonFlag = False,
) -> None:
    """Create a dashboard user; the password is read from a hidden prompt or stdin."""
    cli = state(ctx)
    password = read_password(cli)
    answer = cli.client().post("/v1/users", {"name": name, "password": password.reveal()})
    if json_out:
        print_json(answer)
        return
    print_line(f"created dashboard user {answer.get('name')} ({answer.get('id')})")
    print_line(f"Sign in at {cli.client().addr}/ui/")


@app.command("list")
def list_users(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List dashboard users (names and state; never passwords or hashes)."""
    answer = state(ctx).client().get("/v1/users")
    if json_out:
        print_json(answer)
        return
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    print_table(
        ["ID", "NAME", "CREATED", "CREATED BY", "DISABLED", "LOCKED UNTIL"],
        (
            [
                str(item.get("id")),
                str(item.get("name")),
                when(item.get("created_at")),
                str(item.get("created_by") or "-"),
                when(item.get("disabled_at")),
                when(item.get("locked_until")),
            ]
            for item in items
        ),
    )


@app.command("disable")
def disable(ctx: typer.Context, user: UserRef, json_out: JsonFlag = False) -> None:
    """Disable a user: its sessions end at once and it cannot sign in."""
    view = state(ctx).client().post(user_url(user, "/disable"))
    if json_out:
        print_json(view)
        return
    print_line(f"disabled dashboard user {view.get('name')} ({view.get('id')}); its sessions ended")


@app.command("enable")
def enable(ctx: typer.Context, user: UserRef, json_out: JsonFlag = False) -> None:
    """Enable a disabled user."""
    view = state(ctx).client().post(user_url(user, "/enable"))
    if json_out:
        print_json(view)
        return
    print_line(f"enabled dashboard user {view.get('name')} ({view.get('id')})")


@app.command("passwd")
def passwd(ctx: typer.Context, user: UserRef, json_out: JsonFlag = False) -> None:
    """Set a user's password (hidden prompt or stdin); its sessions end at once."""
    cli = state(ctx)
    password = read_password(cli, "nothing was changed")
    view = cli.client().post(user_url(user, "/password"), {"password": password.reveal()})
    if json_out:
        print_json(view)
        return
    print_line(
        f"set a new password for dashboard user {view.get('name')} ({view.get('id')}); "
        "its sessions ended"
    )


@app.command("delete")
def delete(
    ctx: typer.Context,
    user: UserRef,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete a user; its sessions end at once."""
    cli = state(ctx)
    url = user_url(user)
    if not yes:
        if not cli.wiring.stdin_is_tty():
            raise CliError(f"refusing to delete user {user} without confirmation: pass --yes")
        if not typer.confirm(f"Delete dashboard user {user}? This cannot be undone"):
            raise CliError("delete cancelled; nothing was changed")
    view = cli.client().delete(url)
    if json_out:
        print_json(view)
        return
    print_line(f"deleted dashboard user {view.get('name')} ({view.get('id')}); its sessions ended")
