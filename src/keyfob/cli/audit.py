"""``keyfob audit tail|verify|export``: read, follow, check and export the hash-chained log."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_json_line, print_line, print_table, when

if TYPE_CHECKING:
    from keyfob.cli.client import KeyfobClient

app = typer.Typer(name="audit", help="The audit log: tail, verify, export.", no_args_is_help=True)

PAGE_SIZE = 500
COLUMNS = ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"]


def _row(event: dict[str, Any]) -> list[str]:
    return [
        str(event.get("seq")),
        when(event.get("ts")),
        str(event.get("actor") or "-"),
        str(event.get("action") or "-"),
        str(event.get("target") or "-"),
        str(event.get("outcome") or "-"),
    ]


def _show(events: list[dict[str, Any]], json_out: bool, header: bool) -> None:
    if json_out:
        for event in events:
            print_json_line(event)
    elif events:
        # Rich tables need every row up front; follow mode prints one small table per poll.
        print_table(COLUMNS, (_row(e) for e in events), header=header)


def _newer(
    client: KeyfobClient, filters: dict[str, str], after: int
) -> Iterator[list[dict[str, Any]]]:
    """Pages of events after seq ``after``, oldest first, until the server has no more."""
    while True:
        params: dict[str, str | int] = {**filters, "after": after, "limit": PAGE_SIZE}
        page = client.get("/v1/audit", params=params)
        items: list[dict[str, Any]] = page.get("items") or []
        if items:
            yield items
            after = int(items[-1]["seq"])
        if not items or not page.get("next_cursor"):
            return


@app.command("tail")
def tail(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="How many of the latest events.")
    ] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep polling for new events (Ctrl-C stops).")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between polls with --follow.")
    ] = 2.0,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. secret_set.create.")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Only this target, e.g. secret_set:openai/prod/default.")
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome (ok, denied, …).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Show the latest events (--json: one JSON event per line)."""
    cli = state(ctx)
    client = cli.client()
    filters = {
        name: value
        for name, value in (
            ("actor", actor),
            ("action", action),
            ("target", target),
            ("outcome", outcome),
        )
        if value
    }
    # Newest first from the server, so a long log costs one request, not a scan.
    newest = client.get("/v1/audit", params={**filters, "order": "desc", "limit": limit})
    latest: list[dict[str, Any]] = list(reversed(newest.get("items") or []))
    _show(latest, json_out, header=True)
    if not follow:
        if not latest and not json_out:
            print_line("no audit events")
        return
    after = int(latest[-1]["seq"]) if latest else 0
    shown_header = bool(latest)
    try:
        while True:
            sys.stdout.flush()
            cli.wiring.sleep(interval)
            for page in _newer(client, filters, after):
                _show(page, json_out, header=not shown_header)
                shown_header = True
                after = int(page[-1]["seq"])
    except KeyboardInterrupt:
        return


@app.command("verify")
def verify(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Check the hash chain; exit 1 and show the first bad record if it is broken."""
    client = state(ctx).client()
    report = client.get("/v1/audit/verify")
    first_bad = report.get("first_bad")
    record = _record(client, int(first_bad["seq"])) if isinstance(first_bad, dict) else None
    if json_out:
        print_json({**report, "first_bad_record": record} if first_bad else report)
    elif report.get("ok"):
        head = str(report.get("head") or "")
        print_line(f"audit log ok: {report.get('count')} records, head {head[:16]}")
    else:
        print_line(f"audit log BROKEN: {report.get('count')} records checked")
        if isinstance(first_bad, dict):
            print_line(f"first bad record: seq {first_bad.get('seq')}: {first_bad.get('reason')}")
        if record is not None:
            print_json(record)
    if not report.get("ok"):
        raise typer.Exit(1)


def _record(client: KeyfobClient, seq: int) -> dict[str, Any] | None:
    items = client.get("/v1/audit", params={"after": seq - 1, "limit": 1}).get("items") or []
    return items[0] if items and items[0].get("seq") == seq else None


@app.command("export")
def export(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to FILE (mode 0600) instead of stdout."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Export the whole log as JSONL, oldest first (to stdout: JSONL with or without --json)."""
    client = state(ctx).client()
    if output is None:
        out = sys.stdout.buffer
        with client.stream("/v1/audit/export") as chunks:
            for chunk in chunks:
                out.write(chunk)
        out.flush()
        return
    count = _export_to_file(client, output)
    if json_out:
        print_json({"output": str(output), "records": count})
    else:
        print_line(f"exported {count} audit events to {output}")


def _export_to_file(client: KeyfobClient, output: Path) -> int:
    """Write via a temporary file renamed into place, so a failed export leaves no half file."""
    count = 0
    temp_name: str | None = None
    try:
        # mkstemp creates the file with mode 0600, which os.replace keeps.
        fd, temp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.resolve().parent)
        with os.fdopen(fd, "wb") as handle:
            with client.stream("/v1/audit/export") as chunks:
                last = b"\n"
                for chunk in chunks:
                    if chunk:
                        count += chunk.count(b"\n")
                        last = chunk[-1:]
                        handle.write(chunk)
                if last != b"\n":  # a last line without its newline is still a record
                    count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, output)
    except OSError as exc:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    except BaseException:
        if temp_name is not None:
            Path(temp_name).unlink(missing_ok=True)
        raise
    return count
