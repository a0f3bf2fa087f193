"""Parsing of piped and file entries: what a dotenv or JSON document turns into."""

from __future__ import annotations

import io

import pytest

from keyfob.cli.entries import Sources, parse_bulk, parse_dotenv, read_entries
from keyfob.cli.errors import CliError


def revealed(text: str) -> dict[str, str]:
    return {name: value.reveal() for name, value in parse_dotenv(text, "f").items()}


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("K=plain", "plain"),
        ("K = spaced ", "spaced"),
        ("export K=exported", "exported"),
        ("K=has=equals", "has=equals"),
        ("K=value # comment", "value"),
        ("K=value#not-a-comment", "value#not-a-comment"),
        ("K='single # kept \\n'", "single # kept \\n"),
        ('K="double \\"q\\" \\n \\\\"  # c', 'double "q" \n \\'),
    ],
)
def test_dotenv_values(line: str, value: str):
    assert revealed(line) == {"K": value}


def test_dotenv_skips_blank_lines_and_comments():
    assert revealed("\n# A=1\n   \nB=2\n") == {"B": "2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nno-equals-sign", "f line 2: expected KEY=value"),
        ("lower=1", "f line 1: not a valid key name"),
        ("A=1\nA=2", "f line 2: A is given more than once"),
        ("A='open", "f line 1: unterminated single quote"),
        ('A="open', "f line 1: unterminated double quote"),
        ("A='x' trailing", "f line 1: unexpected text after the closing quote"),
        ("A=''", "f line 1: empty value for A"),
    ],
)
def test_dotenv_errors_name_the_line(text: str, message: str):
    with pytest.raises(CliError, match="^" + message):
        parse_dotenv(text, "f")


def test_dotenv_error_never_quotes_the_line():
    with pytest.raises(CliError) as caught:
        parse_dotenv("sk-live-SECRET-VALUE", "f")

    assert "SECRET" not in str(caught.value)


def test_json_error_gives_a_position_not_the_document():
    with pytest.raises(CliError) as caught:
        parse_bulk('{"A": "sk-SECRET-VALUE",', "stdin")

    assert "line 1 column" in str(caught.value)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("text", ['{"A": 1}', '{"a": "x"}', "[]"])
def test_json_must_be_an_object_of_named_strings(text: str):
    with pytest.raises(CliError):
        parse_bulk(text, "stdin")


def test_env_file_and_a_named_key_are_merged(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("A=1\n")

    entries = read_entries(
        Sources(keys=["B"], env_file=str(env_file), stdin_is_tty=False), io.StringIO("2\n")
    )

    assert {k: v.reveal() for k, v in entries.items()} == {"A": "1", "B": "2"}


def test_the_same_key_from_two_sources_is_refused(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("A=1\n")

    with pytest.raises(CliError, match="A is given more than once"):
        read_entries(
            Sources(keys=["A"], env_file=str(env_file), stdin_is_tty=False), io.StringIO("2")
        )


def test_missing_env_file_is_a_clear_error(tmp_path):
    with pytest.raises(CliError, match=r"cannot read .*missing\.env"):
        read_entries(Sources(keys=[], env_file=str(tmp_path / "missing.env"), stdin_is_tty=True))


def test_entries_print_masked():
    entries = parse_dotenv("A=sk-SECRET", "f")

    assert "SECRET" not in repr(entries)
    assert "SECRET" not in f"{entries}"
