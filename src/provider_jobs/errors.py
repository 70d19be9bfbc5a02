"""The exception tree of provider-jobs.

Every exception we raise derives from :class:`ProviderJobsError`. Errors a
provider raises carry a ``category`` name that the error classifier maps to a
retry decision, an optional HTTP ``status_code`` and an optional
``retry_after_s`` hint::

    ProviderJobsError
    ├── ConfigurationError          bad setting, refused at start
    │   └── PolicyError             a DLQ triage policy file is not valid
    ├── BrokerUnavailable           RabbitMQ cannot be reached
    ├── PublishFailed               messages of a bulk publish were not confirmed
    ├── InvalidJob                  job fails the schema (validation, permanent)
    ├── ArchiveError                the dead-letter archive failed
    │   ├── ArchiveUnavailable      its database cannot be reached (transient)
    │   ├── ArchiveVersionError     its schema is older (upgrade it) or newer than this version
    │   ├── RecordNotFound          no archived dead letter with that id
    │   ├── RecordConflict          the record's status forbids the operation
    │   └── NotReplayable           the record holds no job that can be sent again
    └── ProviderError               raised by or about a provider
        ├── ProviderNotFound        provider_not_found        retryable
        ├── ProviderNotAvailable    provider_not_available    retryable
        ├── ProviderConnectionError connection_error          retryable
        ├── ProviderTimeout         timeout                   retryable
        ├── ServiceUnavailable      service_unavailable       retryable
        ├── ProviderBusy            busy                      retryable
        ├── ValidationFailed        validation                permanent
        ├── AuthorizationFailed     authorization             permanent
        ├── Forbidden               forbidden                 permanent
        ├── UnknownOperation        unknown_operation         permanent
        ├── UnsupportedOperation    unsupported               permanent
        └── InvalidInput            invalid_input             permanent

The categories themselves (name and retryable flag) live in
:mod:`provider_jobs.middleware.classifier`, which reads an exception's
``category`` attribute by name; this module only names them, so that errors
stay importable without the middleware.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ArchiveError",
    "ArchiveUnavailable",
    "ArchiveVersionError",
    "AuthorizationFailed",
    "BrokerUnavailable",
    "ConfigurationError",
    "Forbidden",
    "InvalidInput",
    "InvalidJob",
    "NotReplayable",
    "PolicyError",
    "ProviderBusy",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderJobsError",
    "ProviderNotAvailable",
    "ProviderNotFound",
    "ProviderTimeout",
    "PublishFailed",
    "RecordConflict",
    "RecordNotFound",
    "ServiceUnavailable",
    "UnknownOperation",
    "UnsupportedOperation",
    "ValidationFailed",
]


class ProviderJobsError(Exception):
    """Root of every exception provider-jobs raises.

    Attributes:
        category: Name of the error category the classifier files this
            exception under, or ``None`` to let it look at the message text.
    """

    category: ClassVar[str | None] = None


class ConfigurationError(ProviderJobsError, ValueError):
    """A setting has a value that is not allowed; raised at start."""


class BrokerUnavailable(ProviderJobsError):
    """RabbitMQ could not be reached at the configured URL."""


class PublishFailed(ProviderJobsError):
    """Some messages of a bulk publish were not confirmed by RabbitMQ.

    Attributes:
        confirmed: Ids (job ids) of the messages RabbitMQ confirmed.
        not_confirmed: Id to what happened to it: ``nacked``, ``returned``
            (unroutable), ``unconfirmed`` (connection lost or no confirm in
            time: it may or may not be queued) or ``not_sent`` (never left
            the process), with the detail.
    """

    def __init__(self, message: str, *, confirmed: list[str], not_confirmed: dict[str, str]) -> None:
        super().__init__(message)
        self.confirmed = confirmed
        self.not_confirmed = not_confirmed


class InvalidJob(ProviderJobsError, ValueError):
    """A job does not match the :class:`~provider_jobs.jobs.ProviderJob` schema."""

    category = "validation"


class ArchiveError(ProviderJobsError):
    """The dead-letter archive failed."""


class ArchiveUnavailable(ArchiveError):
    """The archive database cannot be reached; the operation may succeed later."""


class ArchiveVersionError(ArchiveError):
    """The archive's schema is older than this version needs (run ``provider-jobs archive
    upgrade``) or newer than it knows (upgrade provider-jobs)."""


class RecordNotFound(ArchiveError, LookupError):
    """No archived dead letter has the requested id."""


class RecordConflict(ArchiveError):
    """The record's status forbids the operation (replaying a discarded record,
    or a record another operator is replaying at this moment)."""


class NotReplayable(ArchiveError, ValueError):
    """The record holds no Dramatiq message that can be sent again (an undecodable body)."""


class PolicyError(ConfigurationError):
    """A DLQ triage policy file cannot be read or is not valid."""


class ProviderError(ProviderJobsError):
    """An error raised by, or about, a provider.

    Args:
        message: Human-readable description, kept verbatim in logs and the DLQ.
        status_code: HTTP status the provider answered with, if any.
        retry_after_s: Seconds the provider asked us to wait before retrying
            (``Retry-After``), if any.
    """

    category: ClassVar[str | None] = None

    def __init__(self, message: str, *, status_code: int | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class ProviderNotFound(ProviderError):
    """No provider is registered for the job's ``namespace/resource_type``."""

    category = "provider_not_found"


class ProviderNotAvailable(ProviderError):
    """The provider is registered but cannot take work right now."""

    category = "provider_not_available"


class ProviderConnectionError(ProviderError):
    """The provider could not be connected to."""

    category = "connection_error"


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""

    category = "timeout"


class ServiceUnavailable(ProviderError):
    """The provider answered that it is unavailable (502 / 503)."""

    category = "service_unavailable"


class ProviderBusy(ProviderError):
    """The provider is rate limiting or busy (429)."""

    category = "busy"


class ValidationFailed(ProviderError):
    """The provider rejected the request as invalid (400 / 422)."""

    category = "validation"


class AuthorizationFailed(ProviderError):
    """The provider rejected our credentials (401)."""

    category = "authorization"


class Forbidden(ProviderError):
    """The provider refused the operation for these credentials (403)."""

    category = "forbidden"


class UnknownOperation(ProviderError):
    """The provider does not know the requested operation."""

    category = "unknown_operation"


class UnsupportedOperation(ProviderError):
    """The provider knows the operation but does not support it (405 / 501)."""

    category = "unsupported"


class InvalidInput(ProviderError):
    """The job's input cannot be processed by the provider."""

    category = "invalid_input"
