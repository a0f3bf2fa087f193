"""Operator routes for agents and grants."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyfob.api.deps import OperatorDep, VaultDep
from keyfob.api.models import AgentCreate, AgentEgress, AgentUpdate, GrantCreate, GrantFields
from keyfob.api.views import items, to_json

router = APIRouter(tags=["agents and grants"])


@router.post("/v1/agents", status_code=201, summary="Create an agent (its token is shown once)")
async def create_agent(body: AgentCreate, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    view, token = await vault.agents.create(
        ctx, body.name, body.allowed_networks, body.client_cert_sha256
    )
    return {**to_json(view), "token": token.reveal()}


@router.patch(
    "/v1/agents/{agent}", summary="Bind an agent to source networks or a client certificate"
)
async def update_agent(
    agent: str, body: AgentUpdate, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    return to_json(await vault.agents.set_binding(ctx, agent, changes))


@router.get("/v1/agents", summary="List agents")
async def list_agents(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return {"items": items(await vault.agents.list_all())}


@router.get("/v1/agents/{agent}", summary="Show an agent (by id or name)")
async def show_agent(agent: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.agents.get(agent))


@router.post("/v1/agents/{agent}/disable", summary="Disable an agent and revoke its leases")
async def disable_agent(agent: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.agents.set_disabled(ctx, agent, True))


@router.post("/v1/agents/{agent}/enable", summary="Enable a disabled agent")
async def enable_agent(agent: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.agents.set_disabled(ctx, agent, False))


@router.post(
    "/v1/agents/{agent}/egress",
    summary="Set the agent's forward-proxy policy for hosts outside its sets (tunnel or deny)",
)
async def set_egress(
    agent: str, body: AgentEgress, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    found = await vault.agents.get(agent)
    await vault.forwarding.set_egress(ctx, found.id, body.egress)
    return {"id": found.id, "name": found.name, "egress": body.egress}


@router.post("/v1/agents/{agent}/rotate-token", summary="New agent token; the old one stops")
async def rotate_agent_token(agent: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    view, token = await vault.agents.rotate_token(ctx, agent)
    return {**to_json(view), "token": token.reveal()}


@router.delete("/v1/agents/{agent}", summary="Delete an agent, its grants and leases")
async def delete_agent(agent: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.agents.delete(ctx, agent))


@router.post("/v1/grants", status_code=201, summary="Grant an agent use of a secret set")
async def create_grant(body: GrantCreate, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.grants.create(ctx, body.model_dump(exclude_unset=True)))


@router.get("/v1/grants", summary="List grants")
async def list_grants(
    ctx: OperatorDep,
    vault: VaultDep,
    agent: str | None = None,
    secret_set: str | None = None,
    include_revoked: bool = False,
) -> dict[str, Any]:
    found = await vault.grants.search(
        agent=agent, secret_set=secret_set, include_revoked=include_revoked
    )
    return {"items": items(found)}


@router.get("/v1/grants/{grant_id}", summary="Show a grant")
async def show_grant(grant_id: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.grants.get(grant_id))


@router.patch("/v1/grants/{grant_id}", summary="Change a grant's constraints")
async def update_grant(
    grant_id: str, body: GrantFields, ctx: OperatorDep, vault: VaultDep
) -> dict[str, Any]:
    return to_json(await vault.grants.update(ctx, grant_id, body.model_dump(exclude_unset=True)))


@router.delete("/v1/grants/{grant_id}", summary="Revoke a grant and its outstanding leases")
async def revoke_grant(grant_id: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return to_json(await vault.grants.revoke(ctx, grant_id))
