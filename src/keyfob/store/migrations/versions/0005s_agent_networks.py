"""Agent network binding: the source networks an agent's token and leases may come from.

Revision ID: 0005s
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005s"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Comma-separated CIDRs, normalised; NULL: from anywhere (as before).
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("allowed_networks", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("allowed_networks")
