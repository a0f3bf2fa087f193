"""``keyfob grant …``: which agent may use which secret set, and under what constraints."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyfob.cli.constraints import Clearable, constraint_options, constraints, describe
from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, joined, print_json, print_line, print_table, when
from keyfob.cli.paths import segment, set_path

app = typer.Typer(
    name="grant",
    help="Grants: let an agent use a secret set, under limits. create, list, show, update, revoke.",
    no_args_is_help=True,
)

GrantId = Annotated[str, typer.Argument(metavar="ID", help="The grant's id (grant list).")]


def grant_url(grant_id: str) -> str:
    return "/v1/grants/" + segment(grant_id, "a grant id", "keyfob grant list")


@app.command("create")
@constraint_options
def create(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option("--agent", metavar="ID|NAME", help="The agent.")],
    secret_set: Annotated[str, typer.Option("--set", metavar="P/E/N", help="The secret set.")],
    given: dict[str, Any],
    ttl: str | None,
    json_out: JsonFlag = False,
) -> None:
    """Let an agent use a secret set (proxy only, request leases, unless told otherwise)."""
    cli = state(ctx)
    ref = segment(agent, "an agent id or name", "keyfob agent list")
    body = {"agent": ref, "secret_set": set_path(secret_set), **constraints(cli, given, ttl)}
    view = cli.client().post("/v1/grants", body)
    if json_out:
        print_json(view)
        return
    print_line(
        f"granted {view.get('agent')} {joined(view.get('actions'))} on "
        f"{view.get('secret_set')} (grant {view.get('id')})"
    )


@app.command("list")
def list_grants(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(metavar="ID|NAME", help="Only this agent.")] = None,
    secret_set: Annotated[
        str | None, typer.Option("--set", metavar="P/E/N", help="Only this set.")
    ] = None,
    include_revoked: Annotated[
        bool, typer.Option("--include-revoked", help="Also list revoked grants.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List grants (live ones unless --include-revoked)."""
    params: dict[str, str] = {"include_revoked": "true" if include_revoked else "false"}
    if agent:
        params["agent"] = segment(agent, "an agent id or name", "keyfob agent list")
    if secret_set:
        params["secret_set"] = set_path(secret_set)
    answer = state(ctx).client().get("/v1/grants", params=params)
    if json_out:
        print_json(answer)
        return
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    if not items:
        print_line("no grants")
        return
    print_table(
        ["ID", "AGENT", "SET", "ACTIONS", "SCOPES", "KEYS", "USES", "EXPIRES", "REVOKED"],
        (
            [
                str(g.get("id")),
                str(g.get("agent") or g.get("agent_id")),
                str(g.get("secret_set")),
                joined(g.get("actions")),
                joined(g.get("scopes")),
                joined(g.get("keys"), empty="all"),
                str(g.get("uses", 0)),
                when(g.get("expires_at")),
                when(g.get("revoked_at")),
            ]
            for g in items
        ),
    )


@app.command("show")
def show(ctx: typer.Context, grant_id: GrantId, json_out: JsonFlag = False) -> None:
    """Show one grant and all its constraints."""
    view = state(ctx).client().get(grant_url(grant_id))
    if json_out:
        print_json(view)
    else:
        describe(view)


@app.command("update")
@constraint_options
def update(
    ctx: typer.Context,
    grant_id: GrantId,
    given: dict[str, Any],
    ttl: str | None,
    clear: Annotated[
        list[Clearable] | None,
        typer.Option("--clear", help="Remove this constraint (no limit / every key; repeatable)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Change a grant's constraints; only the options given are changed."""
    cli = state(ctx)
    body = constraints(cli, given, ttl)
    cleared = [str(name.value).replace("-", "_") for name in clear or []]
    both = sorted(set(body) & set(cleared))
    if both:
        raise CliError(f"{', '.join(both)} is both set and cleared")
    body.update(dict.fromkeys(cleared))
    if not body:
        raise CliError("nothing to change: give at least one constraint option or --clear")
    view = cli.client().patch(grant_url(grant_id), body)
    if json_out:
        print_json(view)
        return
    print_line(f"updated grant {view.get('id')} ({', '.join(sorted(body))})")


@app.command("revoke")
def revoke(ctx: typer.Context, grant_id: GrantId, json_out: JsonFlag = False) -> None:
    """Revoke a grant; its leases are revoked and its pending lease requests denied."""
    view = state(ctx).client().delete(grant_url(grant_id))
    if json_out:
        print_json(view)
        return
    print_line(
        f"revoked grant {view.get('id')} ({view.get('agent')} on {view.get('secret_set')}); "
        "its leases are revoked"
    )
