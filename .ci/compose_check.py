"""Parse check for the compose file: YAML, PostgreSQL beside keyfob, keyfob locked down."""

import sys
from pathlib import Path

import yaml


def main(path: str) -> None:
    doc = yaml.safe_load(Path(path).read_text())
    services = doc.get("services") or {}
    keyfob, db = services.get("keyfob"), services.get("db")
    problems = []
    if not keyfob or not db:
        problems.append("needs services keyfob and db")
    else:
        if not str(db.get("image", "")).startswith("postgres"):
            problems.append("db is not PostgreSQL")
        if keyfob.get("read_only") is not True:
            problems.append("keyfob must run with read_only: true")
        if not any(str(v).endswith(":/data") for v in keyfob.get("volumes", [])):
            problems.append("keyfob's /data must be a volume")
        if "db" not in (keyfob.get("depends_on") or {}):
            problems.append("keyfob must depend on db")
    for name in doc.get("volumes") or {}:
        if not isinstance(name, str):
            problems.append(f"bad volume name {name!r}")
    if problems:
        sys.exit(f"{path}: " + "; ".join(problems))
    print(f"ok: {path} parses; keyfob read-only with /data on a volume, PostgreSQL beside it")


if __name__ == "__main__":
    main(sys.argv[1])
