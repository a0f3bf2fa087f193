"""Audit shipping: one cursor per sink (the last record shipped) and who ships it.

Revision ID: 0006s
Revises: 0006u
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006s"
down_revision = "0006u"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_ship_cursors",
        sa.Column("sink", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.String(32), nullable=True),
        sa.Column("failing_since", sa.String(32), nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_ship_cursors")
