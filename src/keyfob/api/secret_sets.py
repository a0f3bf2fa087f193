"""Operator routes for secret sets: ``/v1/secret-sets``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from keyfob.api.deps import OperatorDep, VaultDep, if_match
from keyfob.api.models import Rollback, SetCreate, SetUpdate
from keyfob.api.views import items, to_json
from keyfob.errors import InvalidRequest
from keyfob.vault.views import SetView

router = APIRouter(prefix="/v1/secret-sets", tags=["secret sets"])
ONE = "/{provider}/{environment}/{name}"


def _etag(response: Response, view: SetView) -> dict[str, Any]:
    response.headers["ETag"] = f'"{view.version}"'
    return to_json(view)


def _labels(raw: list[str]) -> dict[str, str]:
    out = {}
    for item in raw:
        key, sep, value = item.partition(":")
        if not sep:
            raise InvalidRequest("label filters look like label=key:value")
        out[key] = value
    return out


@router.post("", status_code=201, summary="Create a secret set")
async def create(
    body: SetCreate, ctx: OperatorDep, vault: VaultDep, response: Response
) -> dict[str, Any]:
    view = await vault.sets.create(
        ctx,
        provider=body.provider,
        environment=body.environment,
        name=body.name,
        entries=body.entries,
        labels=body.labels,
        profile=body.profile,
    )
    response.headers["Location"] = f"/v1/secret-sets/{view.path}"
    return _etag(response, view)


@router.get("", summary="List secret sets (names and key names, never values)")
async def list_sets(
    ctx: OperatorDep,
    vault: VaultDep,
    provider: str | None = None,
    environment: str | None = None,
    name: str | None = None,
    label: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    include_deleted: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    found, next_cursor = await vault.sets.search(
        provider=provider,
        environment=environment,
        name=name,
        labels=_labels(label),
        include_deleted=include_deleted,
        cursor=cursor,
        limit=limit,
    )
    return {"items": items(found), "next_cursor": next_cursor}


@router.get(ONE, summary="Show a secret set")
async def show(
    provider: str,
    environment: str,
    name: str,
    ctx: OperatorDep,
    vault: VaultDep,
    response: Response,
) -> dict[str, Any]:
    return _etag(response, await vault.sets.get(f"{provider}/{environment}/{name}"))


@router.patch(ONE, summary="Set or remove keys (a new version)")
async def update(
    provider: str,
    environment: str,
    name: str,
    body: SetUpdate,
    ctx: OperatorDep,
    vault: VaultDep,
    response: Response,
    expected: Annotated[int | None, Depends(if_match)],
) -> dict[str, Any]:
    view = await vault.sets.update(
        ctx,
        f"{provider}/{environment}/{name}",
        entries=body.entries,
        labels=body.labels,
        profile=body.profile,
        expected_version=body.expected_version if body.expected_version is not None else expected,
    )
    return _etag(response, view)


@router.delete(ONE, summary="Soft-delete a secret set (restorable)")
async def delete(
    provider: str, environment: str, name: str, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    return to_json(await vault.sets.delete(ctx, f"{provider}/{environment}/{name}"))


@router.get(ONE + "/versions", summary="Version history, newest first")
async def versions(
    provider: str, environment: str, name: str, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    return {"items": items(await vault.sets.versions(f"{provider}/{environment}/{name}"))}


@router.post(ONE + "/rollback", summary="Make a new version from an old one")
async def rollback(
    provider: str,
    environment: str,
    name: str,
    body: Rollback,
    ctx: OperatorDep,
    vault: VaultDep,
    response: Response,
    expected: Annotated[int | None, Depends(if_match)],
) -> dict[str, Any]:
    view = await vault.sets.rollback(
        ctx,
        f"{provider}/{environment}/{name}",
        body.version,
        expected_version=body.expected_version if body.expected_version is not None else expected,
    )
    return _etag(response, view)


@router.post(ONE + "/restore", summary="Undo a soft delete")
async def restore(
    provider: str, environment: str, name: str, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    return to_json(await vault.sets.restore(ctx, f"{provider}/{environment}/{name}"))


@router.post(ONE + "/purge", summary="Irreversibly remove a deleted set and all its versions")
async def purge(
    provider: str, environment: str, name: str, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    return to_json(await vault.sets.purge(ctx, f"{provider}/{environment}/{name}"))
