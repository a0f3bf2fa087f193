"""``keyfob usage`` and ``keyfob prices list|set|import``: what was spent, and at what price."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line, print_table


class GroupBy(StrEnum):
    GRANT = "grant"
    AGENT = "agent"
    SECRET_SET = "secret_set"  # noqa: S105 - a group name
    MODEL = "model"
    DAY = "day"


def usage(
    ctx: typer.Context,
    group_by: Annotated[
        GroupBy, typer.Option("--group-by", "-g", help="Rows per grant, agent, set, model or day.")
    ] = GroupBy.DAY,
    days: Annotated[
        int | None, typer.Option("--days", min=1, max=366, help="The last N days (default 30).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="From this time (RFC 3339).")] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Up to this time (RFC 3339).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Metered usage (requests, tokens, cost, bytes) and every budget's standing."""
    params: dict[str, Any] = {"group_by": str(group_by)}
    for name, value in (("days", days), ("since", since), ("until", until)):
        if value is not None:
            params[name] = value
    answer = state(ctx).client().get("/v1/usage", params=params)
    if json_out:
        print_json(answer)
        return
    rows = [*answer.get("groups", []), answer.get("total") or {}]
    print_table(
        [str(group_by).upper(), "REQUESTS", "IN", "OUT", "CACHED", "COST USD", "BYTES", "FLAGGED"],
        (
            [
                str(r.get("key")),
                str(r.get("requests", 0)),
                str(r.get("input_tokens", 0)),
                str(r.get("output_tokens", 0)),
                str(r.get("cached_tokens", 0)),
                f"{float(r.get('cost_usd') or 0):.6f}",
                str(r.get("bytes", 0)),
                str(r.get("flagged", 0)),
            ]
            for r in rows
        ),
    )
    standing = answer.get("budgets") or []
    if standing:
        print_line("")
        print_table(
            ["GRANT", "AGENT", "SET", "BUDGET", "USED", "REMAINING", "%", "STATE"],
            (
                [
                    str(b.get("grant_id")),
                    str(b.get("agent")),
                    str(b.get("secret_set")),
                    f"{b.get('unit')} {b.get('limit')}/{b.get('window')}",
                    str(b.get("used")),
                    str(b.get("remaining")),
                    str(b.get("percent")),
                    str(b.get("state")).upper() if b.get("state") != "ok" else "ok",
                ]
                for b in standing
            ),
        )


prices = typer.Typer(
    name="prices",
    help="Model prices (USD per million tokens): the bundled table and your overrides.",
    no_args_is_help=True,
)


def _show(answer: dict[str, Any]) -> None:
    print_line(f"price table version: {answer.get('version')}")
    print_table(
        ["MODEL", "PROVIDER", "INPUT", "OUTPUT", "CACHED", "SOURCE"],
        (
            [
                str(p.get("model")),
                str(p.get("provider") or "-"),
                str(p.get("input")),
                str(p.get("output")),
                str(p.get("cached")),
                str(p.get("source")),
            ]
            for p in answer.get("prices") or []
        ),
    )


@prices.command("list")
def list_prices(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every priced model, where its price comes from, and the table's version."""
    answer = state(ctx).client().get("/v1/prices")
    if json_out:
        print_json(answer)
        return
    _show(answer)


@prices.command("set")
def set_price(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name, e.g. gpt-4o-mini.")],
    input_price: Annotated[str, typer.Option("--input", help="USD per million input tokens.")],
    output_price: Annotated[str, typer.Option("--output", help="USD per million output tokens.")],
    cached: Annotated[
        str | None, typer.Option("--cached", help="USD per million cached input tokens.")
    ] = None,
    provider: Annotated[str | None, typer.Option("--provider")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Set one model's price (overrides the bundled one)."""
    body: dict[str, Any] = {"model": model, "input": input_price, "output": output_price}
    if cached is not None:
        body["cached"] = cached
    if provider is not None:
        body["provider"] = provider
    answer = state(ctx).client().put("/v1/prices", body)
    if json_out:
        print_json(answer)
        return
    print_line(f"price of {model} set; table version {answer.get('version')}")


@prices.command("import")
def import_prices(
    ctx: typer.Context,
    path: Annotated[
        str, typer.Argument(help="CSV file (model,input,output[,cached[,provider]]), - for stdin.")
    ],
    json_out: JsonFlag = False,
) -> None:
    """Import prices from CSV; one bad row rejects the whole file, naming its line."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {type(exc).__name__}") from None
    answer = state(ctx).client().post("/v1/prices/import", {"csv": text})
    if json_out:
        print_json(answer)
        return
    print_line(f"prices imported; table version {answer.get('version')}")
