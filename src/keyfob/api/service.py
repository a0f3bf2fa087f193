"""Service routes: liveness and readiness (no authentication needed, no secrets).

``/readyz`` tells anyone only whether keyfob is ready; why not (which sink, its address,
the last error, the HSM's key and token labels) only an operator token is told.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyfob.api.deps import OperatorOrNoneDep, VaultDep
from keyfob.errors import Unavailable

router = APIRouter(tags=["service"])

NOT_READY = "keyfob is not ready; /readyz with an operator token says why"


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="The database and the audit log can be written, the master key can wrap"
)
async def readyz(vault: VaultDep, operator: OperatorOrNoneDep) -> dict[str, Any]:
    """503 when the vault cannot work; 200 ``degraded`` when audit shipping is behind;
    the reasons only with an operator token."""
    try:
        await vault.ready()
        shipping = await vault.shipping.status()
    except Unavailable:
        if operator is None:
            raise Unavailable(NOT_READY) from None
        raise
    # The vault serves and records every access; only the copies elsewhere lag. Saying
    # so without failing the probe keeps load balancers sending traffic.
    degraded = [s["problem"] for s in shipping if s["problem"]]
    status = "degraded" if degraded else "ready"
    if not shipping or operator is None:
        return {"status": status}
    return {"status": status, "degraded": degraded, "audit_shipping": shipping}
