"""``keyfob token create|list|revoke``: operator tokens (shown once, at creation)."""

from __future__ import annotations

from typing import Annotated

import typer

from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line, print_table, show_new_token, when
from keyfob.tokens import PREFIXES

app = typer.Typer(name="token", help="Operator tokens: create, list, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci or alice-laptop.")],
    json_out: JsonFlag = False,
) -> None:
    """Create an operator token and print it once."""
    answer = state(ctx).client().post("/v1/tokens", {"name": name})
    token = answer.get("token")
    if not isinstance(token, str):
        raise CliError("the server created a token but did not return it; revoke it and retry")
    if json_out:
        print_json(answer)
        return
    show_new_token(token, f"operator token {answer.get('name')} ({answer.get('id')})")


@app.command("list")
def list_tokens(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List operator tokens (ids and names; the tokens themselves are never stored)."""
    answer = state(ctx).client().get("/v1/tokens")
    if json_out:
        print_json(answer)
        return
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    print_table(
        ["ID", "NAME", "CREATED", "REVOKED"],
        (
            [
                str(item.get("id")),
                str(item.get("name")),
                when(item.get("created_at")),
                when(item.get("revoked_at")),
            ]
            for item in items
        ),
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (token list).")],
    json_out: JsonFlag = False,
) -> None:
    """Revoke an operator token; it stops working on the next request."""
    answer = state(ctx).client().delete(f"/v1/tokens/{_segment(token_id)}")
    if json_out:
        print_json(answer)
        return
    print_line(f"revoked token {answer.get('name')} ({answer.get('id')})")


def _segment(value: str) -> str:
    if value.startswith(PREFIXES):
        # Someone pasted the token itself: do not send it anywhere, and do not echo it.
        raise CliError("that is a token, not a token id; see `keyfob token list` for ids")
    # An id is one path segment; refuse anything that could walk elsewhere in the API.
    if not value or not all(c.isalnum() or c in "_-" for c in value):
        raise CliError(f"{value!r} is not a token id (see `keyfob token list`)")
    return value
