"""The archive's Alembic revisions, one module each, oldest first; applied by :mod:`..versions`."""
