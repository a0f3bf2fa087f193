"""``keyfob ca cert|bundle|rotate``: keyfob's CA for forward-proxy clients."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from keyfob.ca_bundle import merged_bundle
from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json, print_line

app = typer.Typer(
    name="ca",
    help="keyfob's CA: the certificate forward-proxy clients trust, a merged bundle, rotation.",
    no_args_is_help=True,
)


def _certificate(ctx: typer.Context) -> str:
    answer = state(ctx).client().get("/v1/ca")
    pem = answer.get("certificate")
    if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
        raise CliError("the server sent no CA certificate")
    return pem


@app.command("cert")
def cert(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Print keyfob's CA certificate(s) as PEM (during a rotation's overlap: both)."""
    if json_out:
        print_json(state(ctx).client().get("/v1/ca"))
        return
    typer.echo(_certificate(ctx), nl=False)


@app.command("bundle")
def bundle(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write the merged PEM bundle.")],
    json_out: JsonFlag = False,
) -> None:
    """Write this machine's root CAs plus keyfob's CA to PATH (for SSL_CERT_FILE & co.)."""
    text = merged_bundle(_certificate(ctx))
    try:
        path.write_text(text)
        os.chmod(path, 0o644)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    count = text.count("BEGIN CERTIFICATE")
    if json_out:
        print_json({"path": str(path), "certificates": count})
        return
    print_line(f"wrote {count} certificates to {path}")


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    overlap: Annotated[
        int, typer.Option(min=0, help="Seconds the old CA stays trusted (default a week).")
    ] = 7 * 24 * 3600,
    json_out: JsonFlag = False,
) -> None:
    """Make a new CA; leaves are signed by it at once, the old one stays trusted a while."""
    answer = state(ctx).client().post("/v1/ca/rotate", {"overlap": overlap})
    if json_out:
        print_json(answer)
        return
    print_line(f"new CA {answer.get('id')}; refresh client bundles (`keyfob ca bundle PATH`)")
