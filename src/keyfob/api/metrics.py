"""``GET /metrics``: Prometheus text format, for operators only (401/403 otherwise)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from keyfob.api.deps import OperatorDep, VaultDep
from keyfob.metrics import CONTENT_TYPE

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (operator token)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(vault: VaultDep, _: OperatorDep) -> Response:
    return Response(vault.metrics.render(), media_type=CONTENT_TYPE)
