"""Alembic migrations of the metadata catalogue; run them with :mod:`filestore.metadata.db.migrate`."""
