"""Alembic's entry: runs the revisions on the connection `service.migrations.upgrade` passes."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through service.migrations.upgrade(engine), which passes a connection")
context.configure(connection=connection, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
