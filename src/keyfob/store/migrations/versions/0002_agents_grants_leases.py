"""Agents, grants, leases and lease requests (approval).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), unique=True, nullable=False),
        sa.Column("digest", sa.String(64), unique=True, nullable=False),
        sa.Column("disabled_at", sa.String(32), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("set_id", sa.String(32), nullable=False),
        sa.Column("set_path", sa.String(200), nullable=False),
        sa.Column("keys", sa.Text, nullable=True),
        sa.Column("actions", sa.Text, nullable=False),
        sa.Column("not_before", sa.String(32), nullable=True),
        sa.Column("expires_at", sa.String(32), nullable=True),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("max_lease_ttl", sa.Integer, nullable=False),
        sa.Column("max_lease_uses", sa.Integer, nullable=True),
        sa.Column("rate_limit", sa.Integer, nullable=True),
        sa.Column("max_uses", sa.Integer, nullable=True),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("rate_window", sa.BigInteger, nullable=False),
        sa.Column("rate_count", sa.Integer, nullable=False),
        sa.Column("methods", sa.Text, nullable=True),
        sa.Column("paths", sa.Text, nullable=True),
        sa.Column("approval", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
    )
    op.create_index("ix_grants_agent", "grants", ["agent_id"])
    op.create_index("ix_grants_set", "grants", ["set_id"])
    op.create_table(
        "leases",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), unique=True, nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("set_id", sa.String(32), nullable=False),
        sa.Column("set_path", sa.String(200), nullable=False),
        sa.Column("actions", sa.Text, nullable=False),
        sa.Column("keys", sa.Text, nullable=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=True),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
        sa.Column("revoke_reason", sa.String(64), nullable=True),
    )
    op.create_index("ix_leases_agent", "leases", ["agent_id"])
    op.create_index("ix_leases_grant", "leases", ["grant_id"])
    op.create_index("ix_leases_set", "leases", ["set_id"])
    op.create_table(
        "lease_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("set_path", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("ttl", sa.Integer, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("decided_at", sa.String(32), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("lease_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_lease_requests_status", "lease_requests", ["status"])


def downgrade() -> None:
    for table in ("lease_requests", "leases", "grants", "agents"):
        op.drop_table(table)
