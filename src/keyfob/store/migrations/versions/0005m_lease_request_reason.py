"""Lease requests keep the agent's reason for the approver (NULL: none given).

Revision ID: 0005m
Revises: 0005k
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005m"
# After 0005k (the sdk branch, merged into this one): two heads would stop
# `upgrade head`. Re-chain at merge if the order of the 0005 files changes.
down_revision = "0005k"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lease_requests") as batch:
        batch.add_column(sa.Column("reason", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lease_requests") as batch:
        batch.drop_column("reason")
