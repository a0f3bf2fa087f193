"""OAuth connect flows in the database: the dashboard's authorization-code flows in
progress (sealed), so the provider's callback works on any node and is used once.

Revision ID: 0006g
Revises: 0006s
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006g"
down_revision = "0006s"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_flows",
        sa.Column("state_digest", sa.String(64), primary_key=True),
        sa.Column("browser_digest", sa.String(64), nullable=False),
        sa.Column("kek_term", sa.Integer, nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("oauth_flows")
