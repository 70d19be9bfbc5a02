"""``provider-jobs dlq ...`` (the operator's commands) and ``provider-jobs archiver``."""

from __future__ import annotations

from .app import archiver, dlq_app

__all__ = ["archiver", "dlq_app"]
