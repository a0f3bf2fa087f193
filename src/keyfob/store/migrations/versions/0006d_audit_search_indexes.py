"""Audit search at scale: (column, seq) indexes for the dashboard's newest-first pages.

A filtered page is ``WHERE col = ? [AND seq < cursor] ORDER BY seq DESC LIMIT n``; with
``seq`` in the index both SQLite and PostgreSQL read exactly the page's rows from the
index end, however long the log. ``actor`` had no index (a search by actor scanned the
log); ``action`` and ``target`` had single-column ones, which SQLite extends by rowid
but PostgreSQL cannot order by ``seq``. The new ones replace those two, so appending a
record maintains one index more than before, not three.

Revision ID: 0006d
Revises: 0006g
Create Date: 2026-12-05
"""

from alembic import op

revision = "0006d"
down_revision = "0006g"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_actor_seq", "audit_events", ["actor", "seq"])
    op.create_index("ix_audit_events_action_seq", "audit_events", ["action", "seq"])
    op.create_index("ix_audit_events_target_seq", "audit_events", ["target", "seq"])
    op.drop_index("ix_audit_events_action", table_name="audit_events")
    op.drop_index("ix_audit_events_target", table_name="audit_events")


def downgrade() -> None:
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_target", "audit_events", ["target"])
    op.drop_index("ix_audit_events_target_seq", table_name="audit_events")
    op.drop_index("ix_audit_events_action_seq", table_name="audit_events")
    op.drop_index("ix_audit_events_actor_seq", table_name="audit_events")
