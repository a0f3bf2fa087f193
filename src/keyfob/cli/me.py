"""``keyfob me grants``: what the agent holding ``KEYFOB_TOKEN`` may use (never values)."""

from __future__ import annotations

import typer

from keyfob.cli.context import state
from keyfob.cli.output import JsonFlag, joined, print_json, print_line, print_table, when

app = typer.Typer(
    name="me", help="The calling agent's own view (agent token).", no_args_is_help=True
)


@app.command("grants")
def grants(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List the grants of the agent whose token is in KEYFOB_TOKEN."""
    answer = state(ctx).agent_client("me grants").get("/v1/me/grants")
    if json_out:
        print_json(answer)
        return
    items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
    if not items:
        print_line(f"agent {answer.get('agent')} has no grants")
        return
    print_line(f"agent {answer.get('agent')}")
    print_table(
        ["GRANT", "SET", "KEYS", "ACTIONS", "SCOPES", "APPROVAL", "MAX TTL", "USES", "EXPIRES"],
        (
            [
                str(item.get("grant_id")),
                str(item.get("secret_set")),
                joined(item.get("keys")),
                joined(item.get("actions")),
                joined(item.get("scopes")),
                str(item.get("approval") or "none"),
                f"{item.get('max_lease_ttl')} s",
                f"{item.get('uses', 0)}/{item.get('max_uses') or '-'}",
                when(item.get("expires_at")),
            ]
            for item in items
        ),
    )
