"""``python -m keyfob.app.serve HOST PORT URL``: the process ``keyfob serve`` becomes.

``keyfob serve`` checks and prints in the command line's process, then replaces it
(``bootstrap.exec_server``: the same pid) by a fresh interpreter running this, so the
server holds none of the command line's modules (typer, rich, httpx and its own CLI) nor
the heap of the start-up checks: it idles at ``run_server``'s memory. Errors are one
line on stderr and exit status 1, as the command line reports them.
"""

from __future__ import annotations

import sys

from keyfob.app.bootstrap import run_server
from keyfob.errors import KeyfobError
from keyfob.settings import Settings


def main(argv: list[str] | None = None) -> None:
    host, port, url = sys.argv[1:4] if argv is None else argv
    try:
        # The same KEYFOB_* environment the command line read (and checked) a moment ago.
        run_server(Settings(), host, int(port))
    except KeyfobError as exc:
        print(f"error: {' '.join(exc.detail.split())}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"error: cannot serve on {url}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
