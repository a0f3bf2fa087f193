"""``keyfob set …``: create, update, list, show, roll back, delete, restore, purge, export."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from keyfob.cli.context import state
from keyfob.cli.entries import Entries, Sources, check_key_names, read_entries
from keyfob.cli.errors import CliError
from keyfob.cli.exports import export
from keyfob.cli.output import (
    JsonFlag,
    joined,
    labels_text,
    print_fields,
    print_json,
    print_line,
    print_table,
    when,
)
from keyfob.cli.paths import set_url, split_path

app = typer.Typer(
    name="set",
    help="Secret sets: named key/value bundles, addressed as provider/environment/name.",
    no_args_is_help=True,
)

SetPath = Annotated[str, typer.Argument(metavar="P/E/N", help="provider/environment/name")]
KeyNames = Annotated[
    list[str] | None,
    typer.Option(
        "--key",
        metavar="NAME",
        help="A key to set; its value is prompted for (hidden) or read from piped stdin.",
    ),
]
EnvFile = Annotated[
    str | None,
    typer.Option("--env-file", metavar="PATH", help="Read KEY=value lines from PATH (- = stdin)."),
]
ExpectVersion = Annotated[
    int | None,
    typer.Option(
        "--expect-version",
        metavar="N",
        help="Fail unless the set is at version N (no lost update).",
    ),
]
Preset = Annotated[
    str | None,
    typer.Option(help="Injection profile preset (openai, anthropic, stripe, github, aws, …)."),
]
ProfileFile = Annotated[
    str | None,
    typer.Option("--profile-file", metavar="FILE", help="Injection profile as a JSON file."),
]


def parse_labels(pairs: list[str] | None) -> dict[str, str]:
    """``--label k=v`` options as a dict."""
    labels: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--label takes key=value, got {pair!r}")
        labels[key] = value
    return labels


def _reveal(entries: Entries) -> dict[str, str]:
    # The only place values leave their Secret wrapper: building the request body.
    return {name: value.reveal() for name, value in entries.items()}


def _profile(preset: str | None, profile_file: str | None) -> dict[str, Any] | None:
    if preset and profile_file:
        raise CliError("give --preset or --profile-file, not both")
    if preset:
        return {"preset": preset}
    if profile_file:
        try:
            with open(profile_file, encoding="utf-8") as handle:
                profile = json.load(handle)
        except OSError as exc:
            raise CliError(f"cannot read {profile_file}: {exc.strerror}") from None
        except ValueError:
            raise CliError(f"{profile_file} is not valid JSON") from None
        if not isinstance(profile, dict):
            raise CliError(f"{profile_file} must hold a JSON object (an injection profile)")
        return profile
    return None


def _key_names(view: dict[str, Any]) -> list[str]:
    return [str(key.get("name")) for key in view.get("keys") or [] if isinstance(key, dict)]


def _report(view: dict[str, Any], verb: str, json_out: bool) -> None:
    if json_out:
        print_json(view)
        return
    keys = joined(_key_names(view), empty="no keys")
    print_line(f"{verb} {view.get('path')} at version {view.get('version')} ({keys})")


@app.command("create")
def create(
    ctx: typer.Context,
    path: SetPath,
    preset: Preset = None,
    profile_file: ProfileFile = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", metavar="K=V", help="A label (repeatable).")
    ] = None,
    key: KeyNames = None,
    env_file: EnvFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a set; values come from prompts, stdin or --env-file, never argv."""
    cli = state(ctx)
    provider, environment, name = split_path(path)
    labels = parse_labels(label)
    profile = _profile(preset, profile_file)
    entries = read_entries(
        Sources(keys=key or [], env_file=env_file, stdin_is_tty=cli.wiring.stdin_is_tty())
    )
    if not entries:
        raise CliError(
            "nothing to store: give --key NAME (prompted), --env-file PATH, "
            "or pipe KEY=value lines on stdin"
        )
    body: dict[str, Any] = {
        "provider": provider,
        "environment": environment,
        "name": name,
        "entries": _reveal(entries),
        "labels": labels,
    }
    if profile is not None:
        body["profile"] = profile
    _report(cli.client().post("/v1/secret-sets", body), "created", json_out)


@app.command("put")
def put(
    ctx: typer.Context,
    path: SetPath,
    key: KeyNames = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", metavar="NAME", help="A key to remove.")
    ] = None,
    env_file: EnvFile = None,
    preset: Preset = None,
    profile_file: ProfileFile = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="K=V", help="Replace the set's labels with these."),
    ] = None,
    expect_version: ExpectVersion = None,
    json_out: JsonFlag = False,
) -> None:
    """Set or remove keys (a new version), or change the profile or labels."""
    cli = state(ctx)
    url = set_url(path)
    removed = remove or []
    check_key_names(removed, "--remove")
    profile = _profile(preset, profile_file)
    other_changes = bool(removed) or profile is not None or label is not None
    entries = read_entries(
        Sources(
            keys=key or [],
            env_file=env_file,
            stdin_is_tty=cli.wiring.stdin_is_tty(),
            # When other changes are asked for, piped stdin is not read: in CI it may never close.
            bulk_stdin=not other_changes,
        )
    )
    both = sorted(set(entries) & set(removed))
    if both:
        raise CliError(f"{', '.join(both)} is both set and removed")
    if not entries and not other_changes:
        raise CliError(
            "nothing to change: give --key NAME, --remove NAME, --env-file PATH, --preset, "
            "--profile-file, --label, or pipe KEY=value lines on stdin"
        )
    changes: dict[str, str | None] = {**_reveal(entries), **dict.fromkeys(removed)}
    body: dict[str, Any] = {"entries": changes}
    if profile is not None:
        body["profile"] = profile
    if label is not None:
        body["labels"] = parse_labels(label)
    if expect_version is not None:
        body["expected_version"] = expect_version
    _report(cli.client().patch(url, body), "updated", json_out)


@app.command("list")
def list_sets(
    ctx: typer.Context,
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    environment: Annotated[str | None, typer.Option(help="Only this environment.")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", metavar="K=V", help="Only sets with this label.")
    ] = None,
    include_deleted: Annotated[
        bool, typer.Option("--include-deleted", help="Also list soft-deleted sets.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List secret sets (never values)."""
    client = state(ctx).client()
    params: dict[str, str | list[str]] = {
        "label": [f"{k}:{v}" for k, v in parse_labels(label).items()],
        "include_deleted": "true" if include_deleted else "false",
    }
    if provider:
        params["provider"] = provider
    if environment:
        params["environment"] = environment
    items: list[dict[str, Any]] = []
    while True:
        page = client.get("/v1/secret-sets", params=params)
        items.extend(page.get("items") or [])
        cursor = page.get("next_cursor")
        if not cursor:
            break
        params["cursor"] = str(cursor)
    if json_out:
        print_json({"items": items})
        return
    if not items:
        print_line("no secret sets")
        return
    print_table(
        ["PATH", "VERSION", "KEYS", "UPDATED", "DELETED"],
        (
            [
                str(view.get("path")),
                str(view.get("version")),
                joined(_key_names(view)),
                when(view.get("updated_at")),
                when(view.get("deleted_at")),
            ]
            for view in items
        ),
    )


@app.command("show")
def show(ctx: typer.Context, path: SetPath, json_out: JsonFlag = False) -> None:
    """Show one set: version, labels, profile and key fingerprints (never values)."""
    view = state(ctx).client().get(set_url(path))
    if json_out:
        print_json(view)
        return
    profile = view.get("profile") or {}
    inject = profile.get("inject") or {}
    print_fields(
        [
            ("path", str(view.get("path"))),
            ("version", str(view.get("version"))),
            ("labels", labels_text(view.get("labels"))),
            ("preset", str(profile.get("preset") or "-")),
            ("upstream", str(profile.get("base_url") or "-")),
            ("hosts", joined(profile.get("hosts"))),
            ("inject", str(inject.get("kind") or "-")),
            ("private", _private(profile)),
            ("scrub", "-" if not profile else "on" if profile.get("scrub", True) else "OFF"),
            ("created", when(view.get("created_at"))),
            ("updated", when(view.get("updated_at"))),
            ("deleted", when(view.get("deleted_at"))),
        ]
    )
    keys = [key for key in view.get("keys") or [] if isinstance(key, dict)]
    if keys:
        print_line("")
        print_table(
            ["KEY", "FINGERPRINT", "CHANGED IN"],
            ([str(k.get("name")), str(k.get("fingerprint")), str(k.get("version"))] for k in keys),
        )


def _private(profile: dict[str, Any]) -> str:
    if not profile:
        return "-"
    if profile.get("allow_private_upstream"):
        return "ALLOWED (http:// and private addresses)"
    return "not allowed"


@app.command("versions")
def versions(ctx: typer.Context, path: SetPath, json_out: JsonFlag = False) -> None:
    """List a set's versions, newest first."""
    page = state(ctx).client().get(set_url(path, "/versions"))
    if json_out:
        print_json(page)
        return
    items = page.get("items") or []
    print_table(
        ["VERSION", "CREATED", "ACTOR", "REASON", "KEYS", "KEY TERM"],
        (
            [
                str(item.get("version")),
                when(item.get("created_at")),
                str(item.get("actor") or "-"),
                _reason(item),
                joined(item.get("keys")),
                str(item.get("kek_term", "-")),
            ]
            for item in items
        ),
    )


def _reason(version: dict[str, Any]) -> str:
    reason = str(version.get("reason") or "-")
    if version.get("rollback_of") is not None:
        return f"{reason} of {version['rollback_of']}"
    return reason


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    path: SetPath,
    version: Annotated[int, typer.Argument(help="The version to copy into a new one.")],
    expect_version: ExpectVersion = None,
    json_out: JsonFlag = False,
) -> None:
    """Make a new version that is a copy of an old one."""
    body: dict[str, Any] = {"version": version}
    if expect_version is not None:
        body["expected_version"] = expect_version
    view = state(ctx).client().post(set_url(path, "/rollback"), body)
    _report(view, f"rolled back to {version}:", json_out)


@app.command("delete")
def delete(ctx: typer.Context, path: SetPath, json_out: JsonFlag = False) -> None:
    """Soft-delete a set (restorable until purged)."""
    view = state(ctx).client().delete(set_url(path))
    if json_out:
        print_json(view)
        return
    print_line(f"deleted {view.get('path')} (restore with `keyfob set restore`)")


@app.command("restore")
def restore(ctx: typer.Context, path: SetPath, json_out: JsonFlag = False) -> None:
    """Undo a soft delete."""
    _report(state(ctx).client().post(set_url(path, "/restore")), "restored", json_out)


@app.command("purge")
def purge(
    ctx: typer.Context,
    path: SetPath,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Destroy a deleted set and all its versions, for good."""
    cli = state(ctx)
    url = set_url(path, "/purge")
    if not yes:
        if not cli.wiring.stdin_is_tty():
            raise CliError(f"refusing to purge {path} without confirmation: pass --yes")
        if not typer.confirm(f"Purge {path} and every version of it? This cannot be undone"):
            raise CliError("purge cancelled; nothing was changed")
    answer = cli.client().post(url)
    if json_out:
        print_json(answer)
        return
    print_line(f"purged {answer.get('purged', path)} ({answer.get('versions', '?')} versions)")


# Its own module: the one command that prints secret values deserves to be read alone.
app.command("export")(export)
