"""``provider-jobs archive upgrade``: bring the archive to this version's schema."""

from __future__ import annotations

from .common import _err, _session

__all__ = ["upgrade"]


def upgrade() -> None:
    """Bring the archive (PROVIDER_JOBS_ARCHIVE_URL) to this version's schema, keeping every record.

    Safe while an archiver writes: indexes are built without blocking it
    (PostgreSQL: CONCURRENTLY) and the records it already holds are indexed for
    search in small transactions. An embedded SQLite archive is upgraded by the
    first process that opens it; a PostgreSQL archive only by this command.
    Exit code 3: the archive cannot be reached, or is newer than this version.
    """
    with _session() as (_settings, archive):
        before, after = archive.upgrade()
    if before == after:
        _err.print(f"archive already at schema revision {after}", highlight=False)
    elif before is None:
        _err.print(f"new archive created at schema revision {after}", highlight=False)
    else:
        _err.print(f"archive upgraded from schema revision {before} to {after}", highlight=False)
