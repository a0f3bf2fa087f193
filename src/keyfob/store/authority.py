"""SQL for the forward proxy: keyfob's CA certificates (key sealed), lease bundles (one
credential over several sets' leases) and each agent's egress policy."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import func, select, update

from keyfob.secret import SECRET, Masked
from keyfob.store._asyncio import AsyncConnection
from keyfob.store.tables import agents, ca_certificates, lease_bundles


@dataclass(frozen=True)
class CaRow(Masked):
    """A CA certificate and its key, sealed (the key is opened only in ``vault``)."""

    id: str
    cert_pem: str
    kek_term: int
    wrapped_dek: bytes = field(metadata=SECRET)
    ciphertext: bytes = field(metadata=SECRET)
    created_at: str = ""
    not_after: str = ""
    retires_at: str | None = None


@dataclass(frozen=True)
class BundleRow:
    id: str
    agent_id: str
    lease_ids: list[str]
    set_paths: list[str]
    created_at: str
    expires_at: str
    revoked_at: str | None
    egress: str | None  # the agent's policy (None: the agent is gone)
    agent_disabled: bool


async def insert_ca(conn: AsyncConnection, row: CaRow) -> None:
    await conn.execute(
        ca_certificates.insert().values(
            id=row.id,
            cert_pem=row.cert_pem,
            kek_term=row.kek_term,
            wrapped_dek=row.wrapped_dek,
            ciphertext=row.ciphertext,
            created_at=row.created_at,
            not_after=row.not_after,
            retires_at=row.retires_at,
        )
    )


async def list_ca(conn: AsyncConnection) -> list[CaRow]:
    """Every CA, newest first."""
    rows = await conn.execute(select(ca_certificates).order_by(ca_certificates.c.created_at.desc()))
    return [CaRow(**dict(r._mapping)) for r in rows.all()]


async def retire_ca(conn: AsyncConnection, ca_id: str, when: str) -> None:
    await conn.execute(
        update(ca_certificates).where(ca_certificates.c.id == ca_id).values(retires_at=when)
    )


async def ca_per_term(conn: AsyncConnection) -> dict[int, int]:
    rows = await conn.execute(
        select(ca_certificates.c.kek_term, func.count()).group_by(ca_certificates.c.kek_term)
    )
    return {int(term): int(n) for term, n in rows.all()}


async def ca_on_old_terms(conn: AsyncConnection, term: int) -> list[tuple[str, int, bytes]]:
    rows = await conn.execute(
        select(
            ca_certificates.c.id, ca_certificates.c.kek_term, ca_certificates.c.wrapped_dek
        ).where(ca_certificates.c.kek_term != term)
    )
    return [(r.id, int(r.kek_term), bytes(r.wrapped_dek)) for r in rows.all()]


async def set_ca_wrapped(
    conn: AsyncConnection, ca_id: str, old_term: int, term: int, wrapped: bytes
) -> None:
    await conn.execute(
        update(ca_certificates)
        .where(ca_certificates.c.id == ca_id, ca_certificates.c.kek_term == old_term)
        .values(kek_term=term, wrapped_dek=wrapped)
    )


async def insert_bundle(
    conn: AsyncConnection,
    *,
    bundle_id: str,
    digest: str,
    agent_id: str,
    lease_ids: list[str],
    set_paths: list[str],
    created_at: str,
    expires_at: str,
) -> None:
    await conn.execute(
        lease_bundles.insert().values(
            id=bundle_id,
            digest=digest,
            agent_id=agent_id,
            lease_ids=json.dumps(lease_ids),
            set_paths=json.dumps(set_paths),
            created_at=created_at,
            expires_at=expires_at,
            revoked_at=None,
        )
    )


async def bundle_by(
    conn: AsyncConnection, *, digest: str | None = None, bundle_id: str | None = None
) -> BundleRow | None:
    """A bundle with its agent's egress policy, by its credential's digest or its id."""
    column = lease_bundles.c.digest if digest is not None else lease_bundles.c.id
    query = (
        select(lease_bundles, agents.c.egress, agents.c.disabled_at)
        .select_from(lease_bundles.outerjoin(agents, agents.c.id == lease_bundles.c.agent_id))
        .where(column == (digest if digest is not None else bundle_id))
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    m = row._mapping
    return BundleRow(
        id=m["id"],
        agent_id=m["agent_id"],
        lease_ids=json.loads(m["lease_ids"]),
        set_paths=json.loads(m["set_paths"]),
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        egress=m["egress"],
        agent_disabled=m["disabled_at"] is not None,
    )


async def revoke_bundle(conn: AsyncConnection, bundle_id: str, when: str) -> bool:
    result = await conn.execute(
        update(lease_bundles)
        .where(lease_bundles.c.id == bundle_id, lease_bundles.c.revoked_at.is_(None))
        .values(revoked_at=when)
    )
    return bool(result.rowcount)


async def agent_egress(conn: AsyncConnection, agent_id: str) -> str | None:
    row = (await conn.execute(select(agents.c.egress).where(agents.c.id == agent_id))).first()
    return str(row.egress) if row else None


async def set_agent_egress(conn: AsyncConnection, agent_id: str, policy: str) -> bool:
    result = await conn.execute(update(agents).where(agents.c.id == agent_id).values(egress=policy))
    return bool(result.rowcount)
