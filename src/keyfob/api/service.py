"""Service routes: liveness and readiness (no authentication, no secrets)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyfob.api.deps import VaultDep

router = APIRouter(tags=["service"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database and the audit log can be written")
async def readyz(vault: VaultDep) -> dict[str, Any]:
    """503 when the vault cannot work; 200 ``degraded`` when audit shipping is behind."""
    await vault.ready()
    shipping = await vault.shipping.status()
    if not shipping:
        return {"status": "ready"}
    # The vault serves and records every access; only the copies elsewhere lag. Saying
    # so without failing the probe keeps load balancers sending traffic.
    degraded = [s["problem"] for s in shipping if s["problem"]]
    return {
        "status": "degraded" if degraded else "ready",
        "degraded": degraded,
        "audit_shipping": shipping,
    }
