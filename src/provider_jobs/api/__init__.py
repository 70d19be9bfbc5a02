"""The HTTP API of provider-jobs: queue statistics, metrics, health, DLQ operations.

HTTP only: what the routes do lives below, in :mod:`provider_jobs.dlq` (replays, discards,
summaries) and :mod:`provider_jobs.rabbitmq` (queue statistics), where the CLI and the
console call it too.
"""

from __future__ import annotations

from .app import create_app
from .archive_stats import ArchiveCollector
from .auth import bearer_token_guard, read_token_guard
from .dlq import dlq_router
from .exposition import QueueCollector, api_registry
from .gate import RequestGate
from .server import api_command, serve

__all__ = [
    "ArchiveCollector",
    "QueueCollector",
    "RequestGate",
    "api_command",
    "api_registry",
    "bearer_token_guard",
    "create_app",
    "dlq_router",
    "read_token_guard",
    "serve",
]
