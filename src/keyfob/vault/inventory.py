"""How much of everything the vault holds, for the dashboard's overview and first-run guide."""

from __future__ import annotations

from keyfob.store import inventory as sql
from keyfob.vault.core import Core


class Inventory:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def counts(self) -> dict[str, int]:
        """``sets``, ``agents``, ``grants`` (live), ``leases_minted``, ``leases_active``,
        ``pending`` (approval requests still waiting)."""
        async with self._core.db.read() as conn:
            return await sql.counts(conn, self._core.now())
