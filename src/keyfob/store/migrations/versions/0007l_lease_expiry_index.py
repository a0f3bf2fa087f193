"""Lease retention: an index on ``leases.expires_at``.

Leases that expired more than ``KEYFOB_LEASE_RETENTION_DAYS`` ago are deleted in batches
(``keyfob.vault.retention``); the index finds them without scanning every lease ever
minted. An expand migration: older code does not read it, ``schema_compat`` stays.

Revision ID: 0007l
Revises: 0006d
Create Date: 2026-12-06
"""

from alembic import op

revision = "0007l"
down_revision = "0006d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_leases_expires", "leases", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_leases_expires", table_name="leases")
