"""Budgets and prices: grant and lease budgets, what they have taken, operator prices.

Revision ID: 0005b
Revises: 0005f
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005b"
down_revision = "0005f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("budgets", sa.Text, nullable=True))
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("budgets", sa.Text, nullable=True))
    op.create_table(
        "budget_usage",
        sa.Column("owner", sa.String(48), primary_key=True),
        sa.Column("unit", sa.String(16), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "prices",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("input", sa.String(32), nullable=False),
        sa.Column("output", sa.String(32), nullable=False),
        sa.Column("cached", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prices")
    op.drop_table("budget_usage")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("budgets")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("budgets")
