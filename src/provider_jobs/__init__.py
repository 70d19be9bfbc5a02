"""provider-jobs: provider operations as Dramatiq actors on RabbitMQ, with
error-aware retries and a dead-letter archive operators can work with.

Importing this package, or any module of it, has no effect beyond defining
names: nothing reads the environment, opens a connection or sets Dramatiq's
global broker. Only the entry points do: the ``provider-jobs`` command and
``provider_jobs.worker``, the module Dramatiq's CLI runs workers from.
``JobQueue``, ``ProviderWorker`` and ``HttpProvider`` are imported on first
use.
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
