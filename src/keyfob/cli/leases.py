"""``keyfob lease …``: the operator's side of leases (list, revoke, approve, deny).

The agent's side (mint, poll, check), which holds an agent token or a lease instead of
an operator token, lives in ``agent_leases`` and is registered on the same group.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyfob.cli import agent_leases
from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line, print_table, when
from keyfob.cli.paths import segment, set_path

app = typer.Typer(
    name="lease",
    help="Leases: mint (agent), check (lease), list, revoke, and approve lease requests.",
    no_args_is_help=True,
)

if TYPE_CHECKING:
    from keyfob.cli.client import KeyfobClient
app.command("mint")(agent_leases.mint)
app.command("poll")(agent_leases.poll)
app.command("check")(agent_leases.check)

AgentFilter = Annotated[
    str | None, typer.Option("--agent", metavar="ID|NAME", help="Only this agent's leases.")
]
GrantFilter = Annotated[
    str | None, typer.Option("--grant", metavar="ID", help="Only leases under this grant.")
]
SetFilter = Annotated[
    str | None, typer.Option("--set", metavar="P/E/N", help="Only leases on this set.")
]
RequestId = Annotated[
    str, typer.Argument(metavar="REQUEST_ID", help="The request's id (lease requests).")
]


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    ISSUED = "issued"
    EXPIRED = "expired"
    ALL = "all"


def _filters(agent: str | None, grant: str | None, secret_set: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    if agent:
        found["agent"] = segment(agent, "an agent id or name", "keyfob agent list")
    if grant:
        found["grant"] = segment(grant, "a grant id", "keyfob grant list")
    if secret_set:
        found["secret_set"] = set_path(secret_set)
    return found


@app.command("list")
def list_leases(
    ctx: typer.Context,
    agent: AgentFilter = None,
    grant: GrantFilter = None,
    secret_set: SetFilter = None,
    all_leases: Annotated[
        bool, typer.Option("--all", help="Also expired, revoked and used-up leases.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List leases (active ones unless --all); never their tokens."""
    params = {**_filters(agent, grant, secret_set), "all": "true" if all_leases else "false"}
    client = state(ctx).client()
    answer = client.get("/v1/leases", params=params)
    if json_out:
        print_json(answer)
        return
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    if not items:
        print_line("no leases" if all_leases else "no active leases")
        return
    names = _agent_names(client)
    print_table(
        ["ID", "AGENT", "SET", "SCOPE", "USES", "STATUS", "EXPIRES"],
        (
            [
                str(lease.get("id")),
                names.get(str(lease.get("agent_id")), str(lease.get("agent_id"))),
                str(lease.get("secret_set")),
                str(lease.get("scope")),
                agent_leases.uses_text(lease),
                str(lease.get("status")),
                when(lease.get("expires_at")),
            ]
            for lease in items
        ),
    )


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    lease_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="One lease (lease list).")
    ] = None,
    agent: AgentFilter = None,
    grant: GrantFilter = None,
    secret_set: SetFilter = None,
    json_out: JsonFlag = False,
) -> None:
    """Revoke one lease by ID, or every lease of an agent, grant or set."""
    filters = _filters(agent, grant, secret_set)
    if lease_id is not None and filters:
        raise CliError("give a lease ID or --agent/--grant/--set, not both")
    if lease_id is None and not filters:
        raise CliError("name a lease ID, or --agent, --grant or --set to revoke their leases")
    client = state(ctx).client()
    if lease_id is not None:
        view = client.delete("/v1/leases/" + segment(lease_id, "a lease id", "keyfob lease list"))
        if json_out:
            print_json(view)
        else:
            print_line(f"revoked lease {view.get('id')} on {view.get('secret_set')}")
        return
    answer = client.post("/v1/leases/revoke", filters)
    if json_out:
        print_json(answer)
        return
    which = ", ".join(f"{name.removeprefix('secret_')} {value}" for name, value in filters.items())
    print_line(f"revoked {answer.get('revoked', 0)} leases ({which})")


@app.command("requests")
def requests(
    ctx: typer.Context,
    status: Annotated[
        RequestStatus, typer.Option(help="Which requests to show.")
    ] = RequestStatus.PENDING,
    json_out: JsonFlag = False,
) -> None:
    """Lease requests under grants with --approval required (pending ones by default)."""
    client = state(ctx).client()
    # An empty status asks the server for every request, whatever its state.
    wanted = "" if status is RequestStatus.ALL else str(status)
    answer = client.get("/v1/lease-requests", params={"status": wanted})
    if json_out:
        print_json(answer)
        return
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    if not items:
        print_line(f"no {'' if status is RequestStatus.ALL else wanted + ' '}lease requests")
        return
    names = _agent_names(client)
    print_table(
        ["ID", "AGENT", "SET", "SCOPE", "TTL", "STATUS", "CREATED", "EXPIRES"],
        (
            [
                str(item.get("id")),
                names.get(str(item.get("agent_id")), str(item.get("agent_id"))),
                str(item.get("secret_set")),
                str(item.get("scope")),
                f"{item.get('ttl')} s",
                str(item.get("status")),
                when(item.get("created_at")),
                when(item.get("expires_at")),
            ]
            for item in items
        ),
    )


def _agent_names(client: KeyfobClient) -> dict[str, str]:
    """Agent id to name, so whoever approves sees who is asking."""
    items = client.get("/v1/agents").get("items") or []
    return {str(a.get("id")): str(a.get("name")) for a in items if isinstance(a, dict)}


def _decide(ctx: typer.Context, request_id: str, verb: str, json_out: bool) -> dict[str, Any]:
    url = "/v1/lease-requests/" + segment(request_id, "a request id", "keyfob lease requests")
    view = state(ctx).client().post(f"{url}/{verb}")
    if json_out:
        print_json(view)
    return view


@app.command("approve")
def approve(ctx: typer.Context, request_id: RequestId, json_out: JsonFlag = False) -> None:
    """Approve a pending lease request; the agent's next poll receives the lease."""
    view = _decide(ctx, request_id, "approve", json_out)
    if not json_out:
        print_line(
            f"approved lease request {view.get('id')} on {view.get('secret_set')}; "
            "the agent's next poll receives the lease"
        )


@app.command("deny")
def deny(ctx: typer.Context, request_id: RequestId, json_out: JsonFlag = False) -> None:
    """Deny a pending lease request."""
    view = _decide(ctx, request_id, "deny", json_out)
    if not json_out:
        print_line(f"denied lease request {view.get('id')} on {view.get('secret_set')}")
