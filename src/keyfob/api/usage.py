"""Operator routes for usage and prices: what was spent, by whom, and at what price."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from keyfob.api.deps import OperatorDep, VaultDep
from keyfob.api.models import PriceImport, PriceSet

router = APIRouter(tags=["usage"])


@router.get("/v1/usage", summary="Metered usage by grant, agent, set, model or day; budgets")
async def usage(
    ctx: OperatorDep,
    vault: VaultDep,
    group_by: Annotated[str, Query(pattern="^(grant|agent|secret_set|model|day)$")] = "day",
    since: str | None = None,
    until: str | None = None,
    days: Annotated[int | None, Query(ge=1, le=366)] = None,
) -> dict[str, Any]:
    return await vault.usage.report(group_by, since, until, days)


@router.get("/v1/prices", summary="The price table: bundled version and operator overrides")
async def prices(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return vault.pricing.list()


@router.put("/v1/prices", summary="Set one model's price (USD per million tokens)")
async def set_price(body: PriceSet, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.pricing.set(ctx, body.model_dump())


@router.post(
    "/v1/prices/import",
    summary="Import prices from CSV text (model,input,output[,cached[,provider]]); one bad "
    "row rejects the whole import, naming its line",
)
async def import_prices(body: PriceImport, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.pricing.import_csv(ctx, body.csv)
