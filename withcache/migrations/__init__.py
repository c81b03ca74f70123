"""The catalog's one migration history, for SQLite and PostgreSQL alike (Alembic; see
withcache.migrate, which runs it with no alembic.ini)."""
