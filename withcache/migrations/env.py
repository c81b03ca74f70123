"""Alembic's environment: runs the revisions on the connection withcache.migrate hands over.

There is no alembic.ini and no engine made here: the caller passes its open SQLAlchemy
connection in `config.attributes["connection"]`, already inside its write transaction (on
PostgreSQL that holds the catalog's advisory lock, so two hosts starting at once migrate one
after the other), and commits it.
"""

from __future__ import annotations

from alembic import context

from withcache.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
