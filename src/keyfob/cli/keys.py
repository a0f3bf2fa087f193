"""``keyfob keys status|rotate|rewrap|retire``: the key-encryption key terms."""

from __future__ import annotations

from typing import Annotated

import typer

from keyfob.cli.context import state
from keyfob.cli.output import JsonFlag, print_json, print_line, print_table, when

app = typer.Typer(
    name="keys",
    help="Key-encryption keys: status, rotation, rewrapping, retirement.",
    no_args_is_help=True,
)


@app.command("status")
def status(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Show the active key term and how many records each term still wraps."""
    answer = state(ctx).client().get("/v1/keys")
    if json_out:
        print_json(answer)
        return
    print_line(f"active key term: {answer.get('active_term')}")
    terms = [term for term in answer.get("terms") or [] if isinstance(term, dict)]
    print_table(
        ["TERM", "STATUS", "CREATED", "RECORDS"],
        (
            [
                str(term.get("term")),
                str(term.get("status")),
                when(term.get("created_at")),
                str(term.get("records", "-")),
            ]
            for term in terms
        ),
    )
    master_key = answer.get("master_key")
    if isinstance(master_key, dict):
        print_line(f"master key provider: {_provider(master_key)}")
    if answer.get("audit_public_key"):
        print_line(f"audit signing key: {answer['audit_public_key']}")


def _provider(master_key: dict[str, object]) -> str:
    name = str(master_key.get("provider"))
    details = [f"{key} {value}" for key, value in master_key.items() if key != "provider"]
    return f"{name} ({', '.join(details)})" if details else name


@app.command("rotate")
def rotate(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Start a new key term; new versions are wrapped by it (run rewrap for old ones)."""
    answer = state(ctx).client().post("/v1/keys/rotate")
    if json_out:
        print_json(answer)
        return
    term = answer.get("term")
    print_line(f"new active key term: {term} (`keyfob keys rewrap` moves old data keys to it)")


@app.command("rewrap")
def rewrap(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Rewrap every data key under the active term; secret data is not touched."""
    answer = state(ctx).client().post("/v1/keys/rewrap")
    if json_out:
        print_json(answer)
        return
    print_line(f"rewrapped {answer.get('rewrapped')} data keys to key term {answer.get('term')}")


@app.command("retire")
def retire(
    ctx: typer.Context,
    term: Annotated[int, typer.Argument(help="A key term that nothing uses any more.")],
    json_out: JsonFlag = False,
) -> None:
    """Retire an unused key term (refused while any record still uses it)."""
    answer = state(ctx).client().post(f"/v1/keys/{term}/retire")
    if json_out:
        print_json(answer)
        return
    print_line(f"key term {answer.get('term')} is {answer.get('status')}")
