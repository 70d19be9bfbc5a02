"""DeadLetterDetails: why a message was dead-lettered, as its ``options["dead_letter"]`` says.

One model for every writer and reader of that option: ``ClassifiedRetries``
writes it for the final failed attempt, the worker's consumer for a job whose
deliveries kept ending without an outcome (``crash_loop``), and the archive
reads it back from each dead letter it stores. Dead letters published by
earlier versions, and those made by hand, are read as they are: a field that
is missing or not of its type is ``None`` and the reader pieces it together
from elsewhere (see :mod:`provider_jobs.dlq.archive.delivery`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..envelope import MAX_TIMESTAMP_MS

__all__ = ["DeadLetterDetails"]

#: Fields only a crash_loop dead letter carries: left out of the others' option, as they always were.
_CRASH_FIELDS = ("deliveries", "crashes")


class DeadLetterDetails(BaseModel):
    """The ``options["dead_letter"]`` object of a dead letter, fields in the order they are written.

    Args:
        reason: Why it was dead-lettered (``exhausted``, ``non_retryable``, ``crash_loop``, ...);
            the AMQP header ``x-provider-jobs-dead-letter`` says the same.
        category: The final error's category (``validation``, ``crash_loop``, ...).
        retryable: Whether that category is retried.
        error_type: The final exception's qualified class name.
        error: The final exception's message.
        traceback: Its formatted traceback; ``None`` when no exception was raised here.
        attempts: Attempts made, the final one included.
        max_retries: The message's retry limit; ``None`` is unlimited.
        deliveries: Deliveries that ended without an outcome (``crash_loop`` only).
        crashes: Worker process deaths counted against the job (``crash_loop`` only).
        worker_id: The worker that dead-lettered it.
        queue_name: The queue it ran from.
        dead_lettered_at_ms: When, in ms since the epoch.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    reason: str | None = None
    category: str | None = None
    retryable: bool | None = None
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    attempts: int | None = None
    max_retries: int | None = None
    deliveries: int | None = None
    crashes: int | None = None
    worker_id: str | None = None
    queue_name: str | None = None
    dead_lettered_at_ms: Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS)] | None = None

    def as_option(self) -> dict[str, Any]:
        """The JSON object to put in ``options["dead_letter"]``: every field, in order, but the
        crash_loop counts when they are unset."""
        return self.model_dump(exclude={name for name in _CRASH_FIELDS if getattr(self, name) is None})

    @classmethod
    def read(cls, value: Any) -> DeadLetterDetails | None:
        """The details ``value`` (an ``options["dead_letter"]`` as decoded) holds; ``None`` when it
        is not a JSON object. Never raises: a field of the wrong type is read as unset."""
        if not isinstance(value, dict):
            return None
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            wrong = {error["loc"][0] for error in exc.errors() if error["loc"]}
            return cls.model_validate({k: v for k, v in value.items() if k not in wrong})
