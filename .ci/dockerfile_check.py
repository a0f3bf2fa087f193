"""Parse check for the Dockerfile where hadolint is unavailable: syntax and our rules."""

import sys
from pathlib import Path

KNOWN = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += " " + line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    if pending:
        sys.exit("Dockerfile ends inside a continued line")
    return out


def main(path: str) -> None:
    steps = instructions(Path(path).read_text())
    unknown = [word for word, _ in steps if word not in KNOWN]
    if unknown or not steps or steps[0][0] not in {"FROM", "ARG"}:
        sys.exit(f"{path}: not a Dockerfile (unknown instructions {unknown})")
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[last_from:]
    users = [args for word, args in final if word == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        sys.exit(f"{path}: the final image must run as a non-root USER")
    if not any(word == "HEALTHCHECK" and "/healthz" in args for word, args in final):
        sys.exit(f"{path}: no HEALTHCHECK on /healthz")
    if not any(word == "VOLUME" for word, _ in final):
        sys.exit(f"{path}: no VOLUME for the data directory")
    print(f"ok: {path} parses ({len(steps)} instructions), non-root, healthcheck, volume")


if __name__ == "__main__":
    main(sys.argv[1])
