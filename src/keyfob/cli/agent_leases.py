"""The agent's side of ``keyfob lease``: mint and poll with an agent token, check with a lease.

A minted lease token is printed once. Under a grant with ``--approval required`` the
server answers 202 with a pending request; ``--wait`` long-polls it (in slices well
under the client's timeout) until an operator decides, and prints the lease once issued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyfob.cli.constraints import Action, Scope
from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line, show_new_token, when
from keyfob.cli.paths import segment, set_path

if TYPE_CHECKING:
    from keyfob.cli.client import KeyfobClient

POLL_SLICE = 20.0  # seconds per long poll; the server holds at most 30, the client waits 30
Wait = Annotated[
    float | None,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        min=0,
        help="Under approval: wait up to SECONDS for an operator, then print the lease.",
    ),
]


def uses_text(lease: dict[str, Any]) -> str:
    """``used/max`` for a lease view (``used/-`` when unlimited)."""
    return f"{lease.get('uses', 0)}/{lease.get('max_uses') or '-'}"


def _lease_summary(lease: dict[str, Any]) -> str:
    return (
        f"lease {lease.get('id')} on {lease.get('secret_set')}: {lease.get('scope')}, "
        f"uses {uses_text(lease)}, expires {when(lease.get('expires_at'))}"
    )


def _show_lease(lease: dict[str, Any]) -> None:
    token = lease.get("token")
    if not isinstance(token, str):
        raise CliError(f"the server issued lease {lease.get('id')} but did not return its token")
    show_new_token(token, _lease_summary(lease))


def _show_leases(leases: Any) -> None:
    """A batch mint: one summary line, then each token on a line of its own."""
    if not isinstance(leases, list) or not all(
        isinstance(lease, dict) and isinstance(lease.get("token"), str) for lease in leases
    ):
        raise CliError("the server issued leases but did not return their tokens")
    first = leases[0] if leases else {}
    print_line(
        f"{len(leases)} leases on {first.get('secret_set')}: {first.get('scope')}, "
        f"expire {when(first.get('expires_at'))} (store them now, you will not see them again):"
    )
    for lease in leases:
        typer.echo(lease["token"])


def mint(
    ctx: typer.Context,
    secret_set: Annotated[str, typer.Option("--set", metavar="P/E/N", help="The secret set.")],
    scope: Annotated[
        Scope, typer.Option(help="request (single use) or workflow (multi-use).")
    ] = Scope.REQUEST,
    ttl: Annotated[
        int | None, typer.Option(metavar="SECONDS", min=1, help="Lifetime (capped by the grant).")
    ] = None,
    max_uses: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Uses of a workflow lease.")
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=1, max=100, help="Mint N leases in one call; prints each token."
        ),
    ] = None,
    wait: Wait = None,
    json_out: JsonFlag = False,
) -> None:
    """Mint a lease with the agent token in KEYFOB_TOKEN; prints the kfl_ token once."""
    client = state(ctx).agent_client("lease mint")
    body: dict[str, Any] = {"secret_set": set_path(secret_set), "scope": str(scope)}
    if ttl is not None:
        body["ttl"] = ttl
    if max_uses is not None:
        body["max_uses"] = max_uses
    if count is not None:
        body["count"] = count
        many = client.post("/v1/leases", body)
        if json_out:
            print_json(many)
        else:
            _show_leases(many.get("leases"))
        return
    status, answer = client.post_status("/v1/leases", body)
    if status != 202:
        if json_out:
            print_json(answer)
        else:
            _show_lease(answer)
        return
    request_id = str(answer.get("id"))
    if wait:
        _await(client, request_id, wait, json_out)
    elif json_out:
        print_json(answer)
    else:
        print_line(
            f"lease request {request_id} on {answer.get('secret_set')} is waiting for an "
            f"operator (`keyfob lease approve {request_id}`); "
            f"then run `keyfob lease poll {request_id} --wait 60`"
        )


def poll(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID", help="From lease mint.")],
    wait: Wait = None,
    json_out: JsonFlag = False,
) -> None:
    """Poll a pending lease request (agent token); prints the lease once it is issued."""
    client = state(ctx).agent_client("lease poll")
    ref = segment(request_id, "a request id", "keyfob lease mint")
    _await(client, ref, wait or 0.0, json_out)


def _await(client: KeyfobClient, request_id: str, wait: float, json_out: bool) -> None:
    """Long-poll until the request leaves ``pending`` or ``wait`` seconds are used up."""
    remaining = wait
    while True:
        step = min(remaining, POLL_SLICE)
        view = client.get(f"/v1/me/lease-requests/{request_id}", params={"wait": f"{step:g}"})
        remaining -= step
        if view.get("status") != "pending" or remaining <= 0:
            break
    status = view.get("status")
    lease = view.get("lease")
    if json_out:
        print_json(view)
    elif status == "issued" and isinstance(lease, dict):
        _show_lease(lease)
    if status == "issued" and isinstance(lease, dict):
        return
    if status == "issued":
        raise CliError(
            f"lease request {request_id} was already issued as lease {view.get('lease_id')}; "
            "its token was shown to the poll that issued it"
        )
    if status == "pending":
        raise CliError(
            f"lease request {request_id} is still waiting for an operator after {wait:g} s; "
            f"poll again with `keyfob lease poll {request_id} --wait SECONDS`"
        )
    raise CliError(f"lease request {request_id} is {status}; no lease was issued")


def check(
    ctx: typer.Context,
    method: Annotated[str | None, typer.Option(metavar="M", help="HTTP method, e.g. POST.")] = None,
    path: Annotated[
        str | None, typer.Option(metavar="PATH", help="Upstream path, e.g. /v1/chat/completions.")
    ] = None,
    action: Annotated[Action, typer.Option(help="What the lease would be used for.")] = (
        Action.PROXY
    ),
    secret_set: Annotated[
        str | None, typer.Option("--set", metavar="P/E/N", help="The set it would be used on.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Would the lease (KEYFOB_LEASE or stdin) allow this use? Consumes nothing; exit 1 if not."""
    body: dict[str, Any] = {"action": str(action)}
    if secret_set is not None:
        body["secret_set"] = set_path(secret_set)
    if method is not None:
        body["method"] = method.upper()
    if path is not None:
        body["path"] = path
    answer = state(ctx).lease_client().post("/v1/leases/check", body)
    allowed = answer.get("allowed") is True
    if json_out:
        print_json(answer)
    else:
        print_line("allowed" if allowed else f"denied (reason: {answer.get('reason')})")
        lease = answer.get("lease")
        if isinstance(lease, dict):
            print_line(f"{_lease_summary(lease)}, {lease.get('status')}")
    if not allowed:
        raise typer.Exit(1)
