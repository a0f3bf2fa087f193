"""Domain limits on names, entries, labels and profiles; every breach is a ValidationFailed.

Messages name the field, never the submitted value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from keyfob.errors import ValidationFailed
from keyfob.profiles import Profile, check_key_name, check_slug, resolve
from keyfob.text import digits
from keyfob.vault import token_grants

MAX_VALUE_BYTES = 64 * 1024
MAX_KEYS = 256
MAX_LABELS = 32
MAX_LABEL_VALUE = 256


def is_text(value: str) -> bool:
    """False for strings that cannot be stored as UTF-8 (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fail(loc: list[str | int], msg: str) -> ValidationFailed:
    return ValidationFailed(f"{'.'.join(map(str, loc))}: {msg}", errors=[{"loc": loc, "msg": msg}])


def field_error(field: str, msg: str) -> ValidationFailed:
    """The 422 for one bad field: ``field: msg``, and ``errors[0].loc`` is ``[field]``."""
    return _fail([field], msg)


def path_parts(provider: str, environment: str, name: str) -> tuple[str, str, str]:
    for field, value in (("provider", provider), ("environment", environment), ("name", name)):
        try:
            check_slug(value, field)
        except ValueError as exc:
            raise _fail([field], str(exc)) from None
    return provider, environment, name


def split_path(path: str) -> tuple[str, str, str]:
    parts = path.split("/")
    if len(parts) != 3:
        raise _fail(["secret_set"], "a secret set is named provider/environment/name")
    return path_parts(*parts)


def check_value(loc: list[str | int], value: object) -> str:
    if not isinstance(value, str):
        raise _fail(loc, "values must be strings")
    if not value:
        raise _fail(loc, "values must not be empty (send null to remove a key)")
    if not is_text(value):
        raise _fail(loc, "values must be valid Unicode text")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise _fail(loc, f"values are at most {MAX_VALUE_BYTES} bytes")
    if "\x00" in value:
        raise _fail(loc, "values may not contain NUL")
    return value


def check_entries(entries: Mapping[str, object], *, allow_null: bool) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, value in entries.items():
        try:
            check_key_name(key)
        except ValueError as exc:
            raise _fail(["entries", key[:128]], str(exc)) from None
        if value is None and allow_null:
            out[key] = None
        else:
            out[key] = check_value(["entries", key], value)
    return out


def check_key_count(count: int) -> None:
    if count > MAX_KEYS:
        raise _fail(["entries"], f"a secret set holds at most {MAX_KEYS} keys")
    if count == 0:
        raise _fail(["entries"], "a secret set needs at least one key")


def check_labels(labels: Mapping[str, object]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise _fail(["labels"], f"at most {MAX_LABELS} labels")
    out = {}
    for key, value in labels.items():
        try:
            check_slug(key, "label name")
        except ValueError as exc:
            raise _fail(["labels", key[:64]], str(exc)) from None
        if key in ("provider", "environment", "name"):
            raise _fail(["labels", key], "provider, environment and name come from the set's path")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or not is_text(value):
            raise _fail(["labels", key], f"label values are strings of at most {MAX_LABEL_VALUE}")
        out[key] = value
    return out


def check_profile(spec: Mapping[str, Any], keys: set[str]) -> dict[str, Any]:
    """Resolve a preset or custom profile and check it only names keys the set has."""
    try:
        profile = resolve(spec)
    except ValidationError as exc:
        errors = [{"loc": ["profile", *exc_loc(e["loc"])], "msg": e["msg"]} for e in exc.errors()]
        raise ValidationFailed(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            errors=errors,
        ) from None
    except (ValueError, TypeError) as exc:
        raise _fail(["profile"], str(exc)) from None
    return profile_keys_ok(profile, keys)


def profile_keys_ok(profile: Profile, keys: set[str]) -> dict[str, Any]:
    missing = [k for k in profile.referenced_keys() if k not in keys]
    if missing:
        raise _fail(
            ["profile", "inject"], f"names keys the set does not have: {', '.join(missing)}"
        )
    return profile.model_dump(mode="json")


def check_refreshed(profile: Mapping[str, Any] | None, entries: Mapping[str, str]) -> None:
    """Refuse a service-account file or app key that could never sign, naming the field."""
    if not profile:
        return
    inject = profile.get("inject") or {}
    allow_private = bool(profile.get("allow_private_upstream"))
    kind = inject.get("kind")
    if kind == "google_service_account":
        key = inject["key"]
        try:
            token_grants.service_account(entries.get(key, ""), allow_private)
        except ValueError as exc:
            where, why = exc.args
            loc: list[str | int] = ["entries", key, where] if where else ["entries", key]
            raise _fail(loc, f"the service-account key file's {where or 'content'} {why}") from None
    elif kind == "github_app":
        try:
            token_grants.check_private_key(entries.get(inject["private_key"], ""))
        except ValueError as exc:
            raise _fail(["entries", inject["private_key"]], str(exc)) from None
        if not digits(entries.get(inject["installation_id"], "")):
            raise _fail(["entries", inject["installation_id"]], "must be a number")


def exc_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    return [part for part in loc if not (isinstance(part, str) and part in _UNION_TAGS)]


_UNION_TAGS = {
    "bearer",
    "header",
    "basic",
    "query",
    "aws_sigv4",
    "oauth2",
    "google_service_account",
    "github_app",
}
