"""The HTTP API of provider-jobs: queue statistics, metrics, health, DLQ operations."""

from __future__ import annotations

from .app import create_app
from .archive_stats import ArchiveCollector, ArchiveSummary, summarise_archive
from .auth import bearer_token_guard, read_token_guard
from .dlq import dlq_router
from .exposition import QueueCollector, api_registry
from .gate import RequestGate
from .queue_stats import QueueStat, read_queue_stats
from .server import api_command, serve

__all__ = [
    "ArchiveCollector",
    "ArchiveSummary",
    "QueueCollector",
    "QueueStat",
    "RequestGate",
    "api_command",
    "api_registry",
    "bearer_token_guard",
    "create_app",
    "dlq_router",
    "read_queue_stats",
    "read_token_guard",
    "serve",
    "summarise_archive",
]
