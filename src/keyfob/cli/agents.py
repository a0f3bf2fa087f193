"""``keyfob agent …``: identities that may only mint leases; their tokens are shown once."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import (
    JsonFlag,
    print_fields,
    print_json,
    print_line,
    print_table,
    show_new_token,
    when,
)
from keyfob.cli.paths import segment

app = typer.Typer(
    name="agent",
    help="Agents: create, list, show, disable, enable, rotate-token, delete.",
    no_args_is_help=True,
)

AgentRef = Annotated[str, typer.Argument(metavar="ID|NAME", help="The agent's id or name.")]


def agent_url(ref: str, suffix: str = "") -> str:
    """The API path of an agent, by id or name."""
    return "/v1/agents/" + segment(ref, "an agent id or name", "keyfob agent list") + suffix


def _token(answer: dict[str, Any]) -> str:
    token = answer.get("token")
    if not isinstance(token, str):
        raise CliError(
            "the server did not return the agent token; run `keyfob agent rotate-token` for one"
        )
    return token


def _show_token(answer: dict[str, Any], json_out: bool, headline: str) -> None:
    token = _token(answer)
    if json_out:
        print_json(answer)
        return
    show_new_token(token, f"{headline} {answer.get('name')} ({answer.get('id')})")
    print_line("Give it to the agent as KEYFOB_TOKEN; it can only mint leases under its grants.")


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A slug, e.g. billing-bot.")],
    allow_network: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-network",
            metavar="CIDR",
            help="Only accept the agent's token and leases from this network (repeatable).",
        ),
    ] = None,
    client_cert: Annotated[
        str | None,
        typer.Option(
            "--client-cert-sha256",
            metavar="HEX",
            help="Require this TLS client certificate (SHA-256 of its DER form).",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an agent and print its token once."""
    body: dict[str, Any] = {"name": name}
    if allow_network:
        body["allowed_networks"] = allow_network
    if client_cert:
        body["client_cert_sha256"] = client_cert
    answer = state(ctx).client().post("/v1/agents", body)
    _show_token(answer, json_out, "agent token for")


@app.command("networks")
def networks(
    ctx: typer.Context,
    agent: AgentRef,
    cidrs: Annotated[
        list[str] | None,
        typer.Argument(metavar="[CIDR]...", help="Networks the agent may connect from."),
    ] = None,
    anywhere: Annotated[
        bool, typer.Option("--anywhere", help="Remove the binding: accept from anywhere.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Bind an agent's token and leases to source networks (or --anywhere)."""
    if bool(cidrs) == anywhere:
        raise CliError("give the networks (CIDRs) or --anywhere, not both or neither")
    answer = state(ctx).client().patch(
        agent_url(agent), {"allowed_networks": None if anywhere else cidrs}
    )
    if json_out:
        print_json(answer)
        return
    bound = answer.get("allowed_networks")
    where = ", ".join(str(n) for n in bound) if isinstance(bound, list) else "anywhere"
    print_line(f"agent {answer.get('name')} accepted from {where}")


@app.command("list")
def list_agents(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List agents (never their tokens)."""
    answer = state(ctx).client().get("/v1/agents")
    if json_out:
        print_json(answer)
        return
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    if not items:
        print_line("no agents")
        return
    print_table(
        ["ID", "NAME", "STATUS", "CREATED", "DISABLED"],
        (
            [
                str(item.get("id")),
                str(item.get("name")),
                str(item.get("status")),
                when(item.get("created_at")),
                when(item.get("disabled_at")),
            ]
            for item in items
        ),
    )


@app.command("show")
def show(ctx: typer.Context, agent: AgentRef, json_out: JsonFlag = False) -> None:
    """Show one agent."""
    view = state(ctx).client().get(agent_url(agent))
    if json_out:
        print_json(view)
        return
    print_fields(
        [
            ("id", str(view.get("id"))),
            ("name", str(view.get("name"))),
            ("status", str(view.get("status"))),
            ("created", when(view.get("created_at"))),
            ("created by", str(view.get("created_by") or "-")),
            ("updated", when(view.get("updated_at"))),
            ("disabled", when(view.get("disabled_at"))),
        ]
    )


@app.command("disable")
def disable(ctx: typer.Context, agent: AgentRef, json_out: JsonFlag = False) -> None:
    """Disable an agent: its token stops working, its leases are revoked."""
    view = state(ctx).client().post(agent_url(agent, "/disable"))
    if json_out:
        print_json(view)
        return
    print_line(
        f"disabled agent {view.get('name')} ({view.get('id')}); its leases are revoked "
        "and its pending lease requests denied"
    )


@app.command("enable")
def enable(ctx: typer.Context, agent: AgentRef, json_out: JsonFlag = False) -> None:
    """Enable a disabled agent (its old leases stay revoked)."""
    view = state(ctx).client().post(agent_url(agent, "/enable"))
    if json_out:
        print_json(view)
        return
    print_line(f"enabled agent {view.get('name')} ({view.get('id')})")


@app.command("rotate-token")
def rotate_token(ctx: typer.Context, agent: AgentRef, json_out: JsonFlag = False) -> None:
    """Give an agent a new token (printed once); the old one stops working at once."""
    answer = state(ctx).client().post(agent_url(agent, "/rotate-token"))
    _show_token(answer, json_out, "new agent token for")


@app.command("delete")
def delete(
    ctx: typer.Context,
    agent: AgentRef,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete an agent; its grants and leases are revoked."""
    cli = state(ctx)
    url = agent_url(agent)
    if not yes:
        if not cli.wiring.stdin_is_tty():
            raise CliError(f"refusing to delete agent {agent} without confirmation: pass --yes")
        if not typer.confirm(
            f"Delete agent {agent}, revoking its grants and leases? This cannot be undone"
        ):
            raise CliError("delete cancelled; nothing was changed")
    view = cli.client().delete(url)
    if json_out:
        print_json(view)
        return
    print_line(
        f"deleted agent {view.get('name')} ({view.get('id')}); its grants and leases are revoked"
    )
