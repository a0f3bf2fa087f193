"""Credential tokens: the sealed access token keyfob minted for a refreshed set, the
refresh claim that makes refreshing single-flight across nodes, and the reconnect mark.

Revision ID: 0005o
Revises: 0005b
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005o"
down_revision = "0005b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credential_tokens",
        sa.Column(
            "set_id",
            sa.String(32),
            sa.ForeignKey("secret_sets.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("kek_term", sa.Integer, nullable=True),
        sa.Column("wrapped_dek", sa.LargeBinary, nullable=True),
        sa.Column("ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("expires_at", sa.String(32), nullable=True),
        sa.Column("lifetime", sa.Integer, nullable=True),
        sa.Column("claim", sa.String(32), nullable=True),
        sa.Column("claim_until", sa.String(32), nullable=True),
        sa.Column("reconnect", sa.String(200), nullable=True),
        sa.Column("reconnect_version", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("credential_tokens")
