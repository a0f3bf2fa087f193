"""Agent binding: the source networks and TLS client certificate an agent must use.

Revision ID: 0005s
Revises: 0005o
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005s"
down_revision = "0005o"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Comma-separated CIDRs, normalised; NULL: from anywhere (as before).
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("allowed_networks", sa.Text, nullable=True))
        # SHA-256 (hex) of the TLS client certificate the agent must present; NULL: none.
        batch.add_column(sa.Column("client_cert_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("client_cert_sha256")
        batch.drop_column("allowed_networks")
