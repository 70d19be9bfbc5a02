"""The archiver: drains ``<queue>.XQ`` into the archive, acking only what is committed."""

from __future__ import annotations

from .batch_store import ArchiverStats
from .consumer import DeadLetterArchiver

__all__ = ["ArchiverStats", "DeadLetterArchiver"]
