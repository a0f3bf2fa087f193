"""Rolling upgrades: the oldest keyfob schema revision whose code may run on this schema.

Revision ID: 0006u
Revises: 0005s
Create Date: 2026-12-05

A node whose code does not know the database's revision (the schema is newer: another
node ran ``keyfob db upgrade``) reads ``schema_compat.oldest_code``. If it knows that
revision, every migration since is an expand migration and it keeps serving; otherwise it
refuses to start. Expand migrations leave the row alone; a contract migration raises it
(see docs/deploy.md, "Rolling upgrades").
"""

import sqlalchemy as sa
from alembic import op

revision = "0006u"
down_revision = "0005s"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_compat",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("oldest_code", sa.String(64), nullable=False),
    )
    op.bulk_insert(
        sa.table("schema_compat", sa.column("id"), sa.column("oldest_code")),
        [{"id": 1, "oldest_code": "0005s"}],
    )


def downgrade() -> None:
    op.drop_table("schema_compat")
