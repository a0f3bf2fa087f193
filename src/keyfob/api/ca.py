"""keyfob's CA: its certificate for clients of the forward proxy, and rotation.

The certificate is served only to an authenticated operator or agent, never over plain
unauthenticated HTTP: a network attacker who could swap it would be trusted in its place.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyfob.api.deps import OperatorDep, OperatorOrAgentDep, VaultDep
from keyfob.api.models import CaRotate

router = APIRouter(tags=["forward proxy"])


@router.get("/v1/ca", summary="keyfob's CA certificates (PEM) for forward-proxy clients")
async def ca_certificate(ctx: OperatorOrAgentDep, vault: VaultDep) -> dict[str, Any]:
    rows = await vault.authority.current()
    return {
        "certificate": "".join(r.cert_pem for r in rows),
        "certificates": [
            {
                "id": r.id,
                "created_at": r.created_at,
                "not_after": r.not_after,
                "retires_at": r.retires_at,
            }
            for r in rows
        ],
    }


@router.post("/v1/ca/rotate", summary="A new CA; the old one stays trusted for `overlap` s")
async def ca_rotate(body: CaRotate, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    row = await vault.authority.rotate(ctx, body.overlap)
    return {"id": row.id, "created_at": row.created_at, "not_after": row.not_after}
