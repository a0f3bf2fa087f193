"""``keyfob init`` and ``keyfob serve``: the local commands that create and run a vault."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import typer

from keyfob.cli.context import InitOutcome, state
from keyfob.cli.errors import CliError
from keyfob.cli.output import (
    JsonFlag,
    print_fields,
    print_json,
    print_json_line,
    print_line,
    show_new_token,
)
from keyfob.cli.users import read_password


def _describe(result: InitOutcome) -> dict[str, Any]:
    token = result.operator_token
    return {
        "operator_token": token.reveal() if token is not None else None,
        "data_dir": str(result.data_dir),
        "database_url": result.database_url,
        "master_key_file": str(result.master_key_file) if result.master_key_file else None,
    }


def _show_created(result: InitOutcome) -> None:
    print_fields(
        [
            ("data dir", str(result.data_dir)),
            ("database", result.database_url),
            ("master key", result.master_key_source),
        ]
    )
    if result.operator_token is not None:
        show_new_token(result.operator_token.reveal(), "operator token")
        print_line("Use it as KEYFOB_TOKEN, or save it to a file for --token-file.")
        print_line("Create a dashboard user: keyfob user create NAME")


def init(
    ctx: typer.Context,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="NAME",
            help="Also create the first dashboard user (password from a hidden prompt or stdin).",
        ),
    ] = None,
    self_signed: Annotated[
        bool,
        typer.Option(
            "--self-signed",
            help="Also write a self-signed TLS certificate and key to <data dir>/tls "
            "(for a first run; use a real certificate after).",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Create the data dir, master key and first operator token (printed once)."""
    cli = state(ctx)
    # Asked before anything is created, so a refused password leaves nothing half done.
    password = read_password(cli) if user else None
    core = cli.wiring.bootstrap()
    result = core.init_vault(cli.settings)
    user_id = core.create_first_user(cli.settings, user, password) if user and password else None
    tls = core.make_self_signed(cli.settings) if self_signed else None
    if json_out:
        extra: dict[str, Any] = {"user": {"name": user, "id": user_id}} if user else {}
        if tls is not None:
            extra["tls"] = {"cert": str(tls[0]), "key": str(tls[1])}
        print_json({**_describe(result), **extra})
        return
    print_line("initialised a new keyfob vault")
    _show_created(result)
    if user:
        print_line(f"dashboard user {user} created: sign in at /ui/ once keyfob serve runs")
    if tls is not None:
        print_line(f"self-signed TLS certificate {tls[0]} and key {tls[1]}; serve HTTPS with")
        print_line(f"  KEYFOB_TLS_CERT={tls[0]} KEYFOB_TLS_KEY={tls[1]} keyfob serve")


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default KEYFOB_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port to bind (default KEYFOB_PORT, 8200)."),
    ] = None,
    forward_proxy: Annotated[
        str | None,
        typer.Option(
            "--forward-proxy",
            metavar="HOST:PORT",
            help="Also serve the forward proxy (HTTPS_PROXY) here (default KEYFOB_PROXY_LISTEN).",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Serve the API and dashboard; initialises the data dir first if needed."""
    cli = state(ctx)
    settings = cli.settings
    if forward_proxy is not None:
        from keyfob.settings import Settings

        try:
            settings = Settings.model_validate(
                {**settings.model_dump(), "proxy_listen": forward_proxy}
            )
        except ValueError:
            raise CliError(f"--forward-proxy {forward_proxy!r} is not HOST:PORT") from None
    bind_host = host or cli.settings.host
    bind_port = cli.settings.port if port is None else port
    core = cli.wiring.bootstrap()
    result = core.ensure_initialised(cli.settings)
    scheme = "https" if cli.settings.tls_cert is not None else "http"
    url = base_url(bind_host, bind_port, scheme)
    if json_out:
        print_json_line({**_describe(result), "created": result.created, "url": url})
    else:
        if result.created:
            print_line("initialised a new keyfob vault")
            _show_created(result)
        else:
            print_line(f"data dir {result.data_dir}, database {result.database_url}")
        print_line(f"keyfob serving on {url} (dashboard {url}/ui/, API reference {url}/docs)")
        if settings.proxy_listen:
            print_line(f"forward proxy on {settings.proxy_listen} (HTTPS_PROXY)")
    if not _is_loopback(bind_host) and scheme == "http":
        typer.echo(
            f"warning: {bind_host} is reachable from other machines; put TLS in front "
            "of keyfob before sending tokens to it over a network",
            err=True,
        )
    try:
        core.exec_server(settings, bind_host, bind_port, url)  # returns only in tests
    except OSError as exc:
        raise CliError(f"cannot serve on {url}: {exc.strerror or exc}") from None


def base_url(host: str, port: int, scheme: str = "http") -> str:
    """``http://host:port``, with IPv6 literals bracketed."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"{scheme}://[{host}]:{port}"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
