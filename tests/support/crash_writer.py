"""Child process for the crash test: write secret versions until killed.

Usage: ``python crash_writer.py PATH FIRST`` with ``KEYFOB_*`` in the environment (the
crash test forks it from the zygote and runs it as ``__main__`` there). Prints
``READY`` once the vault is open, then ``ACK <version> <value>`` after each write is
committed, flushing every line, so the parent knows exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import sys

# Run as a script, this directory comes first on sys.path, and its http.py would shadow
# the standard library's http package (which PyJWT imports through urllib.request).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(__file__)]

from keyfob.settings import Settings  # noqa: E402
from keyfob.vault import Context, Vault  # noqa: E402


async def write_forever(path: str, first: int) -> None:
    vault = await Vault.open(Settings())
    ctx = Context(actor="system:crash-test")
    print("READY", flush=True)
    n = first
    while True:
        value = f"v{n}"
        view = await vault.sets.update(ctx, path, entries={"VALUE": value})
        print(f"ACK {view.version} {value}", flush=True)
        n += 1


if __name__ == "__main__":
    asyncio.run(write_forever(sys.argv[1], int(sys.argv[2])))
