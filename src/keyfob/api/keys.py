"""Operator routes for key management and operator tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyfob.api.deps import OperatorDep, VaultDep
from keyfob.api.models import TokenCreate
from keyfob.api.views import to_json

router = APIRouter(tags=["keys"])


@router.get("/v1/keys", summary="KEK terms, how many records each wraps")
async def status(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.keys.status())


@router.post("/v1/keys/rotate", status_code=201, summary="Add a KEK term for new writes")
async def rotate(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.keys.rotate(ctx))


@router.post("/v1/keys/rewrap", summary="Move every data key to the active term")
async def rewrap(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.keys.rewrap(ctx))


@router.post("/v1/keys/{term}/retire", summary="Destroy an unused KEK term")
async def retire(term: int, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.keys.retire(ctx, term))


@router.post("/v1/tokens", status_code=201, tags=["tokens"], summary="Create an operator token")
async def create_token(body: TokenCreate, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    view, token = await vault.operators.create_token(ctx, body.name)
    return {**view, "token": token.reveal()}


@router.get("/v1/tokens", tags=["tokens"], summary="List operator tokens (never the tokens)")
async def list_tokens(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return {"items": await vault.operators.list_tokens()}


@router.delete("/v1/tokens/{token_id}", tags=["tokens"], summary="Revoke an operator token")
async def revoke_token(token_id: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.operators.revoke_token(ctx, token_id)
