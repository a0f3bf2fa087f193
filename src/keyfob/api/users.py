"""Operator routes for dashboard users (passwords are write-only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from keyfob.api.deps import OperatorDep, VaultDep
from keyfob.secret import Secret

router = APIRouter(tags=["users"])


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="a slug")
    password: SecretStr = Field(description="12 to 1024 characters; stored as an argon2 hash")


@router.post("/v1/users", status_code=201, summary="Create a dashboard user")
async def create_user(body: UserCreate, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.users.create(ctx, body.name, Secret(body.password.get_secret_value()))


@router.get("/v1/users", summary="List dashboard users (never password hashes)")
async def list_users(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return {"items": await vault.users.list_all()}


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: SecretStr = Field(description="12 to 1024 characters; stored as an argon2 hash")


@router.get("/v1/users/{user}", summary="Show a dashboard user (by id or name)")
async def show_user(user: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.users.get(user)


@router.post("/v1/users/{user}/disable", summary="Disable a user; its sessions end at once")
async def disable_user(user: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.users.set_disabled(ctx, user, True)


@router.post("/v1/users/{user}/enable", summary="Enable a disabled user")
async def enable_user(user: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.users.set_disabled(ctx, user, False)


@router.post("/v1/users/{user}/password", summary="Set a user's password; its sessions end")
async def set_password(
    user: str, body: PasswordChange, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    return await vault.users.set_password(ctx, user, Secret(body.password.get_secret_value()))


@router.delete("/v1/users/{user}", summary="Delete a user; its sessions end at once")
async def delete_user(user: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.users.delete(ctx, user)
