"""provider-jobs: provider operations as Dramatiq actors on RabbitMQ, with
error-aware retries and a dead-letter archive operators can work with.

Importing this package has no effect beyond defining names. The Dramatiq CLI
entry point ``provider_jobs.actors`` is different: importing it reads the
settings and sets Dramatiq's global broker, so ``JobQueue`` and
``ProviderWorker``, which need it, are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ArchiveError,
    ArchiveUnavailable,
    AuthorizationFailed,
    BrokerUnavailable,
    ConfigurationError,
    Forbidden,
    InvalidInput,
    InvalidJob,
    ProviderBusy,
    ProviderConnectionError,
    ProviderError,
    ProviderJobsError,
    ProviderNotAvailable,
    ProviderNotFound,
    ProviderTimeout,
    PublishFailed,
    RecordNotFound,
    ServiceUnavailable,
    UnknownOperation,
    UnsupportedOperation,
    ValidationFailed,
)
from .jobs import ProviderJob, parse_job
from .middleware import ClassifiedRetries, ErrorCategory, ErrorClassifier
from .providers import FunctionProvider, InProcessProvider, Provider, ProviderRegistry
from .settings import Settings

if TYPE_CHECKING:
    from .compat import JobQueue, ProviderWorker
    from .providers.http import HttpProvider

__all__ = [
    "ArchiveError",
    "ArchiveUnavailable",
    "AuthorizationFailed",
    "BrokerUnavailable",
    "ClassifiedRetries",
    "ConfigurationError",
    "ErrorCategory",
    "ErrorClassifier",
    "Forbidden",
    "FunctionProvider",
    "HttpProvider",
    "InProcessProvider",
    "InvalidInput",
    "InvalidJob",
    "JobQueue",
    "Provider",
    "ProviderBusy",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderJob",
    "ProviderJobsError",
    "ProviderNotAvailable",
    "ProviderNotFound",
    "ProviderRegistry",
    "ProviderTimeout",
    "ProviderWorker",
    "PublishFailed",
    "RecordNotFound",
    "ServiceUnavailable",
    "Settings",
    "UnknownOperation",
    "UnsupportedOperation",
    "ValidationFailed",
    "parse_job",
]


def __getattr__(name: str) -> Any:
    if name in ("JobQueue", "ProviderWorker"):
        from . import compat

        return getattr(compat, name)
    if name == "HttpProvider":
        from .providers.http import HttpProvider

        return HttpProvider
    raise AttributeError(f"module 'provider_jobs' has no attribute {name!r}")
