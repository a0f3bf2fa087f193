"""Service routes: liveness and readiness (no authentication, no secrets)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyfob.api.deps import VaultDep

router = APIRouter(tags=["service"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="The database and the audit log can be written, the master key can wrap"
)
async def readyz(vault: VaultDep) -> dict[str, Any]:
    await vault.ready()
    return {"status": "ready"}
