"""Sign-in limits: failure counters per typed name (keyed hash) and per client address.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signin_limits",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.String(32), nullable=True),
        sa.Column("expires_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_signin_limits_expires", "signin_limits", ["expires_at"])


def downgrade() -> None:
    op.drop_table("signin_limits")
