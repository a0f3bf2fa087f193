"""``keyfob backup``, ``keyfob restore`` and ``keyfob db status|upgrade``: local commands on
the data dir and database named by ``KEYFOB_*`` (like ``init``; no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keyfob.cli.context import state
from keyfob.cli.output import JsonFlag, print_fields, print_json, print_line

db = typer.Typer(name="db", help="The database schema: status and upgrade.", no_args_is_help=True)


def _counts(counts: dict[str, int]) -> str:
    rows = sum(counts.values())
    sets = counts.get("secret_sets", 0)
    versions = counts.get("secret_versions", 0)
    records = counts.get("audit_events", 0)
    return f"{rows} rows ({sets} sets, {versions} versions, {records} audit records)"


def backup(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="PATH", help="New file to write (0600).")],
    json_out: JsonFlag = False,
) -> None:
    """Write a consistent, encrypted copy of the vault to PATH while it serves."""
    cli = state(ctx)
    result = cli.wiring.bootstrap().backup(cli.settings, path)
    if json_out:
        print_json(result)
        return
    print_line(f"backup written to {result['path']}")
    print_fields(
        [
            ("schema", result["revision"]),
            ("created", result["created_at"]),
            ("contents", _counts(result["counts"])),
            ("audit head", f"{result['audit']['count']} {result['audit']['head']}"),
        ]
    )
    print_line("It is sealed under the master key, which it does not contain: keep the key safe")
    print_line("and apart from the backup; restoring needs both.")


def restore(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="PATH", help="A file `keyfob backup` wrote.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace everything in a database that holds a vault."),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Restore a backup into an empty database, then verify every set and the audit chain."""
    cli = state(ctx)
    result: dict[str, Any] = cli.wiring.bootstrap().restore(cli.settings, path, force)
    if json_out:
        print_json(result)
        return
    print_line(f"restored {result['path']} (made {result['created_at']})")
    print_fields(
        [
            ("schema", result["revision"]),
            ("contents", _counts(result["counts"])),
            ("versions", f"{result['versions_checked']} decrypted"),
            ("audit", f"verified, {result['audit']['count']} records"),
        ]
    )


def _show_status(result: dict[str, Any]) -> None:
    print_fields(
        [
            ("database", result["database"]),
            ("revision", result["revision"] or "-"),
            ("head", result["head"]),
            ("state", result["state"]),
            ("pending", ", ".join(result["pending"]) or "-"),
        ]
    )


@db.command("status")
def status(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """The schema's revision against this keyfob's newest migration."""
    cli = state(ctx)
    result = cli.wiring.bootstrap().db_status(cli.settings)
    if json_out:
        print_json(result)
    else:
        _show_status(result)


@db.command("upgrade")
def upgrade(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Apply pending migrations (expand-only: older nodes keep serving)."""
    cli = state(ctx)
    result = cli.wiring.bootstrap().db_upgrade(cli.settings)
    if json_out:
        print_json(result)
        return
    if result["previous"] == result["revision"]:
        print_line(f"nothing to do: the schema is {result['state']} ({result['revision']})")
    else:
        before = result["previous"] or "nothing"
        print_line(f"upgraded the schema from {before} to {result['revision']}")
    _show_status(result)
