"""Forward proxy: keyfob's CA (key sealed like a secret), multi-set lease bundles, and
each agent's egress policy for hosts outside its sets.

Revision ID: 0005f
Revises: 0005m
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005f"
down_revision = "0005m"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ca_certificates",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("cert_pem", sa.Text, nullable=False),
        sa.Column("kek_term", sa.Integer, nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("not_after", sa.String(32), nullable=False),
        sa.Column("retires_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "lease_bundles",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("lease_ids", sa.Text, nullable=False),
        sa.Column("set_paths", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
    )
    op.create_index("ix_lease_bundles_agent", "lease_bundles", ["agent_id"])
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("egress", sa.String(16), nullable=False, server_default="tunnel")
        )


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("egress")
    op.drop_table("lease_bundles")
    op.drop_table("ca_certificates")
