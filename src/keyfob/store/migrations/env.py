"""Alembic environment: keyfob always hands in an open connection (see ``store.engine``)."""

from alembic import context

from keyfob.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
