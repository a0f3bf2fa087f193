"""Signed checkpoints of (count, head hash), written outside the database.

A checkpoint says "the log had ``count`` records ending in ``head``", signed with the
vault's Ed25519 key. Verification then catches what the chain alone cannot: a log
truncated below ``count``, or rewritten wholesale with fresh hashes. The file is
replaced atomically and only ever moves forward.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DOMAIN = b"keyfob/audit-checkpoint/v1"


@dataclass(frozen=True)
class Checkpoint:
    count: int
    head: str
    ts: str
    public_key: str
    signature: str

    @staticmethod
    def message(count: int, head: str, ts: str) -> bytes:
        return b"|".join([_DOMAIN, str(count).encode(), head.encode(), ts.encode()])

    @staticmethod
    def make(
        count: int, head: str, ts: str, sign: Callable[[bytes], bytes], public: bytes
    ) -> Checkpoint:
        signature = sign(Checkpoint.message(count, head, ts))
        return Checkpoint(
            count,
            head,
            ts,
            base64.b64encode(public).decode(),
            base64.b64encode(signature).decode(),
        )

    def signature_ok(self, verify: Callable[[bytes, bytes, bytes], bool], public: bytes) -> bool:
        """True when signed by ``public`` (the vault's own key, not the one in the file)."""
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except ValueError:
            return False
        return verify(public, self.message(self.count, self.head, self.ts), signature)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "head": self.head,
            "ts": self.ts,
            "public_key": self.public_key,
            "signature": self.signature,
        }


class CheckpointFile:
    """The checkpoint on disk; ``write`` is atomic and never moves backwards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The event loop and the deferred checkpoint writer thread share the temporary file.
        self._lock = threading.Lock()

    def read(self) -> Checkpoint | None:
        try:
            data = json.loads(self.path.read_text())
            return Checkpoint(
                int(data["count"]),
                str(data["head"]),
                str(data["ts"]),
                str(data["public_key"]),
                str(data["signature"]),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            # An unreadable checkpoint is reported by verify as a failure, not ignored.
            return Checkpoint(-1, "", "", "", "")

    def write(self, checkpoint: Checkpoint) -> bool:
        with self._lock:
            return self._write(checkpoint)

    def _write(self, checkpoint: Checkpoint) -> bool:
        current = self.read()
        if current is not None and current.count >= checkpoint.count:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w") as handle:
            handle.write(json.dumps(checkpoint.as_dict(), indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        return True
