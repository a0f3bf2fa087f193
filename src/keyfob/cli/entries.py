"""Where secret values come from: a hidden prompt, stdin or a dotenv file, never argv.

``--key NAME`` names a key; its value is prompted for on a terminal, or read whole
from piped stdin when it is the only one. Without ``--key``, piped stdin holds dotenv
lines or a JSON object. ``--env-file PATH`` (``-`` for stdin) reads dotenv lines.
No message here quotes a value, or a name that might be one.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import typer

from keyfob.cli.errors import CliError
from keyfob.names import KEY_NAME_RE
from keyfob.secret import Secret

KEY_NAME = KEY_NAME_RE
NAME_RULE = "key names use A-Z, 0-9 and _ and do not start with a digit"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}

Entries = dict[str, Secret[str]]


@dataclass(frozen=True)
class Sources:
    """What the user asked for: named keys, an env file, and whether stdin may be read."""

    keys: Sequence[str]
    env_file: str | None
    stdin_is_tty: bool
    bulk_stdin: bool = True  # may piped stdin be read as dotenv/JSON when nothing else is given


def check_key_names(names: Sequence[str], option: str = "--key") -> None:
    """Refuse ``NAME=value`` and malformed names without echoing what was typed."""
    for position, name in enumerate(names, start=1):
        if "=" in name:
            raise CliError(
                f"{option} takes a key NAME, not NAME=value: secret values come from a "
                "prompt, stdin or --env-file, never the command line"
            )
        if not KEY_NAME.match(name):
            raise CliError(f"{option} number {position} is not a valid key name ({NAME_RULE})")
    if len(set(names)) != len(names):
        raise CliError(f"the same key name is given twice to {option}")


def read_entries(sources: Sources, stdin: TextIO | None = None) -> Entries:
    """Collect the entries the user supplied, refusing empty values and duplicates."""
    stream = stdin if stdin is not None else sys.stdin
    check_key_names(sources.keys)
    entries: Entries = {}
    if sources.env_file is not None:
        if sources.env_file == "-":
            _merge(entries, parse_dotenv(stream.read(), "stdin"))
        else:
            _merge(entries, parse_dotenv(_read_file(sources.env_file), sources.env_file))
    if sources.keys:
        _merge(entries, _named_values(sources, stream))
    elif sources.env_file is None and not sources.stdin_is_tty and sources.bulk_stdin:
        _merge(entries, parse_bulk(stream.read(), "stdin"))
    return entries


def _named_values(sources: Sources, stream: TextIO) -> Entries:
    if sources.stdin_is_tty:
        return {name: _prompt(name) for name in sources.keys}
    if sources.env_file == "-":
        raise CliError("stdin is already read by --env-file -; prompt for --key on a terminal")
    if len(sources.keys) > 1:
        raise CliError(
            "stdin is not a terminal, so values cannot be prompted for; with several "
            "keys, pipe KEY=value lines without --key, or use --env-file PATH"
        )
    (name,) = sources.keys
    value = stream.read()
    # Exactly one trailing newline is the pipe's (echo, heredoc); anything more is the value's.
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if not value:
        raise CliError(f"empty value for {name} on stdin: refusing to store an empty secret")
    return {name: Secret(value)}


def _prompt(name: str) -> Secret[str]:
    value: str = typer.prompt(f"Value for {name} (hidden)", hide_input=True)
    if not value:
        raise CliError(f"empty value for {name}: refusing to store an empty secret")
    return Secret(value)


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None


def _merge(into: Entries, more: Entries) -> None:
    for name, value in more.items():
        if name in into:
            raise CliError(f"{name} is given more than once")
        into[name] = value


def parse_bulk(text: str, source: str) -> Entries:
    """Piped entries: a JSON object of strings, or dotenv lines."""
    if text.lstrip().startswith("{"):
        return parse_json_object(text, source)
    entries = parse_dotenv(text, source)
    if not entries:
        raise CliError(f"no KEY=value lines on {source}")
    return entries


def parse_json_object(text: str, source: str) -> Entries:
    """``{"KEY": "value", …}``; every value a non-empty string."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The position only: the decoder's own message could quote the document.
        raise CliError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise CliError(f"{source}: expected a JSON object of KEY: value")
    entries: Entries = {}
    for name, value in data.items():
        if not KEY_NAME.match(name):
            raise CliError(f"{source}: a JSON key is not a valid key name ({NAME_RULE})")
        if not isinstance(value, str):
            raise CliError(f"{source}: the value of {name} must be a string")
        if not value:
            raise CliError(f"{source}: empty value for {name}: refusing to store an empty secret")
        entries[name] = Secret(value)
    return entries


def parse_dotenv(text: str, source: str) -> Entries:
    """``KEY=value`` lines: ``#`` comments, optional ``export``, quotes as in shell dotenv."""
    entries: Entries = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        where = f"{source} line {lineno}"
        if not sep:
            raise CliError(f"{where}: expected KEY=value")
        if not KEY_NAME.match(name):
            raise CliError(f"{where}: not a valid key name ({NAME_RULE})")
        if name in entries:
            raise CliError(f"{where}: {name} is given more than once")
        value = _dotenv_value(rest.strip(), where)
        if not value:
            raise CliError(f"{where}: empty value for {name}: refusing to store an empty secret")
        entries[name] = Secret(value)
    return entries


def _dotenv_value(text: str, where: str) -> str:
    if text[:1] == "'":
        end = text.find("'", 1)
        if end < 0:
            raise CliError(f"{where}: unterminated single quote (multi-line values: use stdin)")
        _only_comment_after(text[end + 1 :], where)
        return text[1:end]
    if text[:1] == '"':
        return _double_quoted(text, where)
    # Unquoted: an inline comment starts at whitespace followed by '#'.
    match = re.search(r"\s#", text)
    return (text[: match.start()] if match else text).rstrip()


def _double_quoted(text: str, where: str) -> str:
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            chars.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        if char == '"':
            _only_comment_after(text[index + 1 :], where)
            return "".join(chars)
        chars.append(char)
        index += 1
    raise CliError(f"{where}: unterminated double quote (multi-line values: use stdin)")


def _only_comment_after(tail: str, where: str) -> None:
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        raise CliError(f"{where}: unexpected text after the closing quote")
