"""provider-jobs: provider operations as Dramatiq actors on RabbitMQ, with
error-aware retries and a dead-letter archive operators can work with.

Importing this package has no effect beyond defining names; the Dramatiq
CLI entry point is ``provider_jobs.actors``.
"""

from __future__ import annotations

from .compat import JobQueue, ProviderWorker
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
    RecordNotFound,
    ServiceUnavailable,
    UnknownOperation,
    UnsupportedOperation,
    ValidationFailed,
)
from .jobs import ProviderJob, parse_job
from .middleware import ClassifiedRetries, ErrorCategory, ErrorClassifier
from .providers import FunctionProvider, HttpProvider, InProcessProvider, Provider, ProviderRegistry
from .settings import Settings

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
    "RecordNotFound",
    "ServiceUnavailable",
    "Settings",
    "UnknownOperation",
    "UnsupportedOperation",
    "ValidationFailed",
    "parse_job",
]
