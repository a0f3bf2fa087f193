"""What the docs promise, read from the Markdown, so tests notice when code and docs drift."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
API_DOC = DOCS / "api.md"
CONFIGURATION_DOC = DOCS / "configuration.md"

_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)")
_PROBLEM_ROW = re.compile(r"^\| `([a-z-]+)` \| (\d{3}) \|", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{[^}]*\}")

# Values that make a documented path concrete: an existing set, term 1, some token id.
_EXAMPLES = {
    "{p}": "openai",
    "{e}": "prod",
    "{n}": "default",
    "{term}": "1",
    "{id}": "0" * 16,
    "{id-or-name}": "nobody",
}


def documented_routes() -> dict[tuple[str, str], str]:
    """Every ``METHOD /path`` in docs/api.md (placeholders as written, like ``{p}``), mapped
    to who may call it: ``operator``, ``agent``, ``lease`` or ``service``.

    A table row names the token in its second cell when it is not the operator's.
    """
    routes: dict[tuple[str, str], str] = {}
    for line in API_DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        token = cells[2] if line.startswith("|") and len(cells) > 2 else ""
        for method, path in _ROUTE.findall(line):
            if not path.startswith("/v1/"):
                kind = "service"
            else:
                kind = token if token in ("agent", "lease") else "operator"
            routes.setdefault((method, path), kind)
    return routes


def operator_routes() -> list[tuple[str, str]]:
    return [route for route, kind in documented_routes().items() if kind == "operator"]


def shape(path: str) -> str:
    """A path with every placeholder blanked, so ``{p}`` and ``{provider}`` compare equal."""
    return _PLACEHOLDER.sub("{}", path)


def concrete(path: str) -> str:
    for placeholder, value in _EXAMPLES.items():
        path = path.replace(placeholder, value)
    assert "{" not in path, f"no example value for a placeholder in {path}"
    return path


def documented_problems() -> dict[str, int]:
    """The problem table of docs/api.md: slug -> HTTP status."""
    return {slug: int(status) for slug, status in _PROBLEM_ROW.findall(API_DOC.read_text())}
