"""ProviderJob: the schema of every message a provider-operation actor takes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidJob
from .ids import new_uuid4_hex

__all__ = ["STANDARD_OPERATIONS", "ProviderJob", "parse_job"]

#: Operations every provider understands; providers may define more actions.
STANDARD_OPERATIONS = ("create", "get", "update", "delete")
#: Hex digits of the content digest in the key of an edited job (128 bits).
_KEY_DIGEST_CHARS = 32


def _new_job_id() -> str:
    return new_uuid4_hex()


def _now() -> datetime:
    return datetime.now(UTC)


def _job_id_of(data: dict[str, Any]) -> Any:
    return data["job_id"]


class ProviderJob(BaseModel):
    """One provider operation to run.

    Args:
        job_id: Unique id; generated when absent.
        provider_namespace: Provider namespace, for example ``ITL.Core``.
        resource_type: Resource type within it, for example ``ResourceGroup``.
        operation: ``create``, ``get``, ``update``, ``delete`` or a
            provider-defined action such as ``restart``.
        request: The operation's input, a JSON object.
        priority: 0-9, higher runs first (RabbitMQ priority queue). Default 5.
        submitted_at: When the producer submitted the job (UTC); defaults to now.
        correlation_id: Optional id tying the job to a caller's request.
        idempotency_key: What the provider deduplicates calls by: the same for
            every attempt and redelivery of the job. Default: ``job_id``. An
            edited replay gets a key of its own (:meth:`rekeyed`); a message
            without the field (any message but an edited replay's) has the default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    job_id: str = Field(default_factory=_new_job_id, min_length=1, max_length=128)
    provider_namespace: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)*$", max_length=128
    )
    resource_type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*(/[A-Za-z][A-Za-z0-9_-]*)*$", max_length=128)
    operation: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=64)
    request: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=5, ge=0, le=9, strict=True)
    submitted_at: datetime = Field(default_factory=_now)
    correlation_id: str | None = Field(default=None, max_length=128)
    # Declared after job_id: its default is the validated job_id.
    idempotency_key: str = Field(default_factory=_job_id_of, min_length=1, max_length=255)

    @property
    def provider(self) -> str:
        """``namespace/resource_type``, the key providers are registered under."""
        return f"{self.provider_namespace}/{self.resource_type}"

    def to_message(self) -> dict[str, Any]:
        """The JSON-safe dict carried in the Dramatiq message.

        ``idempotency_key`` is left out when it is the default (the job id), so
        that workers which do not know the field still take every message but
        an edited replay's.
        """
        if self.idempotency_key == self.job_id:
            return self.model_dump(mode="json", exclude={"idempotency_key"})
        return self.model_dump(mode="json")

    def rekeyed(self) -> ProviderJob:
        """This job under a key of its own content: what a replay with edits runs.

        The key is ``<job_id>.<digest>``, the digest a SHA-256 of every field but
        the key. An edited job is another operation, which a provider must not
        take for a repeat of the original; the same edit of the same job gets the
        same key, so that sending it twice (a replay whose confirm was lost, run
        again) still runs it once.
        """
        content = json.dumps(
            self.model_dump(mode="json", exclude={"idempotency_key"}), sort_keys=True, separators=(",", ":")
        )
        digest = hashlib.sha256(content.encode()).hexdigest()[:_KEY_DIGEST_CHARS]
        return self.model_copy(update={"idempotency_key": f"{self.job_id}.{digest}"})


def parse_job(data: ProviderJob | Mapping[str, Any]) -> ProviderJob:
    """Validate ``data`` as a :class:`ProviderJob`.

    Raises:
        InvalidJob: ``data`` does not match the schema; the message names
            every offending field.
    """
    if isinstance(data, ProviderJob):
        return data
    if not isinstance(data, Mapping):
        raise InvalidJob(f"Validation error: a job must be a JSON object, not {type(data).__name__}")
    try:
        return ProviderJob.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'job'}: {err['msg']}"
            for err in exc.errors()
            # idempotency_key's default waits for a valid job_id, whose own error is named.
            if err["type"] != "default_factory_not_called"
        )
        raise InvalidJob(f"Validation error: invalid job: {problems}") from None
