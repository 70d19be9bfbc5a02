"""DeadLetter: one message taken from ``<queue>.XQ``, with its failure story and fingerprint.

:func:`dead_letter_from_delivery` accepts every way a message reaches XQ:

- an *enriched* dead letter published by ``ClassifiedRetries``: the final
  error, category, traceback and attempt history are in ``options``;
- a *plain* Dramatiq dead letter, nacked by a worker and moved by RabbitMQ
  (``x-death`` headers): unknown actor, ``AgeLimit`` expiry, or the fallback
  when the enriched publish failed; its body holds the previous attempt's options;
- a body that is not JSON or not a Dramatiq message: kept byte for byte,
  category ``undecodable``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from typing import Any

from dramatiq.common import q_name

from ...middleware.dead_letter_details import DeadLetterDetails
from .delivery import AGE_LIMIT as AGE_LIMIT  # noqa: PLC0414
from .delivery import DEAD_LETTER_HEADER as DEAD_LETTER_HEADER  # noqa: PLC0414
from .delivery import REJECTED as REJECTED  # noqa: PLC0414
from .delivery import (
    decode_message,
    delivery_problem,
    final_failure,
    int_or_none,
    jsonable,
    last_death,
    ms_or_none,
)
from .fingerprint import fingerprint, normalise_error

__all__ = [
    "AGE_LIMIT",
    "REJECTED",
    "UNARCHIVABLE",
    "UNDECODABLE",
    "DeadLetter",
    "dead_letter_from_delivery",
    "fingerprint",
    "normalise_error",
    "quarantined",
    "unreadable",
]

#: Category of a body that is not JSON or not a Dramatiq message.
UNDECODABLE = "undecodable"
#: Category of a dead letter the archive refused as parsed; kept as a minimal raw record.
UNARCHIVABLE = "unarchivable"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One archived dead letter.

    The fields up to ``body`` come from the delivery; the rest are kept by the
    archive (``id`` is ``None`` until stored). Times are ms since the epoch.
    """

    dedupe_key: str
    message_id: str | None
    job_id: str | None
    queue_name: str | None
    source_queue: str
    actor_name: str | None
    provider_namespace: str | None
    resource_type: str | None
    operation: str | None
    request: dict[str, Any] | None
    priority: int | None
    category: str
    retryable: bool | None
    reason: str
    error_type: str | None
    error: str
    traceback: str | None
    attempts: int
    max_retries: int | None
    attempt_history: list[dict[str, Any]]
    x_death: list[dict[str, Any]] | None
    headers: dict[str, Any]
    first_enqueued_ms: int | None
    dead_lettered_ms: int
    archived_ms: int
    fingerprint: str
    body: bytes
    id: int | None = None
    status: str = "dead"
    status_reason: str | None = None
    replay_count: int = 0
    replay_message_ids: list[str] = dataclasses.field(default_factory=list)
    escalated_ms: int | None = None
    updated_ms: int | None = None

    @property
    def provider(self) -> str | None:
        """``namespace/resource_type``, or ``None`` for a record without a job."""
        if self.provider_namespace and self.resource_type:
            return f"{self.provider_namespace}/{self.resource_type}"
        return None

    def decoded_body(self) -> dict[str, Any] | None:
        """The Dramatiq message as a dict, or ``None`` if the body is not one."""
        return decode_message(self.body)[0]

    def to_dict(self, *, with_body: bool = False) -> dict[str, Any]:
        """A JSON-safe dict; the raw body is included (as text, lossy) only when asked."""
        data = dataclasses.asdict(self)
        body = data.pop("body")
        if with_body:
            data["body"] = body.decode("utf-8", errors="replace")
        data["provider"] = self.provider
        return data


#: Fields a record gets from the archive, not from its delivery, with their defaults.
_ARCHIVE_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(DeadLetter) if f.default is not dataclasses.MISSING
}
_ARCHIVE_FACTORIES = tuple(
    (f.name, f.default_factory)
    for f in dataclasses.fields(DeadLetter)
    if f.default_factory is not dataclasses.MISSING
)


def _new_record(**fields: Any) -> DeadLetter:
    """``DeadLetter(**fields)``, in half the time.

    The frozen dataclass's ``__init__`` sets the record's 34 fields one
    ``object.__setattr__`` at a time, the largest single cost of reading a dead
    letter after decoding its JSON. This fills the new instance's ``__dict__``
    at once, with the same defaults; a test holds the two to the same result.
    """
    record: DeadLetter = object.__new__(DeadLetter)
    values = record.__dict__
    values.update(_ARCHIVE_DEFAULTS, **fields)
    for name, factory in _ARCHIVE_FACTORIES:
        values[name] = factory()
    return record


def dead_letter_from_delivery(
    body: bytes,
    headers: Mapping[str, Any] | None,
    *,
    source_queue: str,
    amqp_message_id: str | None = None,
    amqp_timestamp_s: int | None = None,
    now_ms: int | None = None,
) -> DeadLetter:
    """Turn one delivery from ``source_queue`` (an XQ) into a :class:`DeadLetter`.

    Never raises on bad input: whatever cannot be understood is kept raw.

    Args:
        body: The message body, kept byte for byte.
        headers: The AMQP headers (``x-death``, ``x-provider-jobs-dead-letter``).
        source_queue: The queue it was consumed from.
        amqp_message_id: The AMQP ``message_id`` property, used to tell raw bodies apart.
        amqp_timestamp_s: The AMQP ``timestamp`` property, likewise.
        now_ms: Archive time; defaults to now.
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    plain_headers: dict[str, Any] = jsonable(dict(headers or {}))
    x_death, latest_death, death_ms = last_death(plain_headers)
    message, decode_error = decode_message(body)
    if message is not None:
        decode_error = delivery_problem(message, latest_death)
        message = message if decode_error is None else None

    if message is None:
        distinct = f"{death_ms}:{amqp_message_id}:{amqp_timestamp_s}"
        error = decode_error or "body is not a Dramatiq message"
        return _raw_record(
            UNDECODABLE,
            error,
            dedupe_key="raw:" + hashlib.sha256(body + distinct.encode()).hexdigest(),
            message_id=_text(amqp_message_id),
            job_id=None,
            queue_name=_text(latest_death.get("queue")) or q_name(source_queue),
            source_queue=source_queue,
            actor_name=None,
            x_death=x_death,
            headers=plain_headers,
            dead_lettered_ms=death_ms or now_ms,
            archived_ms=now_ms,
            # Group undecodable bodies by what is wrong with them, not by where.
            fingerprint_error=error.partition(":")[0],
            body=body,
        )

    options: dict[str, Any] = message["options"]
    kwargs: dict[str, Any] = message["kwargs"]
    job = kwargs.get("job") if isinstance(kwargs.get("job"), dict) else None
    job = job or (message["args"][0] if message["args"] and isinstance(message["args"][0], dict) else None)
    namespace = _text(job.get("provider_namespace")) if job else None
    resource_type = _text(job.get("resource_type")) if job else None
    provider = _text(options.get("provider"))
    if (not namespace or not resource_type) and provider is not None:
        namespace, _, resource_type = provider.partition("/")
    history = [h for h in options.get("attempt_history") or [] if isinstance(h, dict)]
    dead = DeadLetterDetails.read(options.get("dead_letter"))
    message_timestamp = message["message_timestamp"]
    failure = final_failure(
        message,
        history=history,
        dead=dead,
        headers=plain_headers,
        last_death=latest_death,
        death_ms=death_ms or now_ms,
    )
    category = _text(failure.category) or "unknown"
    reason = _text(failure.reason) or "unknown"
    error = _text(failure.error) or ""
    request = job.get("request") if job and isinstance(job.get("request"), dict) else None
    operation = _text((job.get("operation") if job else None) or options.get("operation"))
    priority = int_or_none(job.get("priority")) if job else None
    return _new_record(
        dedupe_key=f"msg:{message['message_id']}",
        message_id=message["message_id"],
        job_id=_text((job.get("job_id") if job else None) or options.get("job_id")),
        queue_name=q_name(message["queue_name"]),
        source_queue=source_queue,
        actor_name=message["actor_name"],
        provider_namespace=_text(namespace),
        resource_type=_text(resource_type),
        operation=operation,
        request=request,
        priority=priority if priority is not None else int_or_none(options.get("broker_priority")),
        category=category,
        retryable=failure.retryable if isinstance(failure.retryable, bool) else None,
        reason=reason,
        error_type=_text(failure.error_type),
        error=error,
        traceback=_text(failure.traceback),
        attempts=failure.attempts,
        max_retries=dead.max_retries if dead is not None else None,
        attempt_history=history,
        x_death=x_death,
        headers=plain_headers,
        first_enqueued_ms=message_timestamp,
        dead_lettered_ms=failure.dead_lettered_ms,
        archived_ms=now_ms,
        fingerprint=fingerprint(
            category=category,
            provider_namespace=_text(namespace),
            resource_type=_text(resource_type),
            operation=operation,
            error=error,
        ),
        body=body,
    )


def quarantined(record: DeadLetter, storage_error: str) -> DeadLetter:
    """A minimal record of ``record`` for when the archive refused it as parsed.

    Only what any database accepts is kept: the ids (as text any database
    takes), the source queue, the raw body byte for byte and the storage error,
    with category ``unarchivable``, so that one bad dead letter is kept (and
    visible) instead of blocking every one behind it.
    """
    error = _text(f"archive refused the record: {storage_error}") or "archive refused the record"
    return _raw_record(
        UNARCHIVABLE,
        error,
        dedupe_key=_text(record.dedupe_key) or record.dedupe_key,
        message_id=_text(record.message_id),
        job_id=_text(record.job_id),
        queue_name=_text(record.queue_name),
        source_queue=record.source_queue,
        actor_name=_text(record.actor_name),
        x_death=None,
        headers={},
        dead_lettered_ms=ms_or_none(record.dead_lettered_ms) or record.archived_ms,
        archived_ms=record.archived_ms,
        fingerprint_error=error,
        body=record.body,
    )


def unreadable(
    body: bytes,
    error: BaseException,
    *,
    source_queue: str,
    amqp_message_id: Any = None,
    amqp_timestamp_s: Any = None,
    now_ms: int | None = None,
) -> DeadLetter:
    """A minimal record of a delivery that :func:`dead_letter_from_delivery` failed to read.

    Category ``unarchivable``, the raw body byte for byte and what went wrong;
    nothing else of the delivery (not even its headers) is trusted.
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    message_id = _text(amqp_message_id)
    distinct = f"unreadable:{message_id}:{amqp_timestamp_s!s:.40}"
    text = _text(f"could not read the dead letter: {type(error).__name__}: {error}"[:2000]) or ""
    return _raw_record(
        UNARCHIVABLE,
        text,
        dedupe_key="raw:" + hashlib.sha256(body + distinct.encode()).hexdigest(),
        message_id=message_id,
        job_id=None,
        queue_name=None,
        source_queue=source_queue,
        actor_name=None,
        x_death=None,
        headers={},
        dead_lettered_ms=now_ms,
        archived_ms=now_ms,
        fingerprint_error=f"could not read the dead letter: {type(error).__name__}",
        body=body,
    )


def _text(value: Any) -> str | None:
    """A non-empty string as text every database takes (a lone surrogate, which a JSON body can
    carry as ``\\ud800``, escaped); ``None`` for anything else. A job's fields may hold any JSON."""
    if not isinstance(value, str) or not value:
        return None
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return value


def _raw_record(
    category: str,
    error: str,
    *,
    fingerprint_error: str,
    x_death: list[dict[str, Any]] | None,
    headers: dict[str, Any],
    dead_lettered_ms: int,
    archived_ms: int,
    body: bytes,
    dedupe_key: str,
    message_id: str | None,
    job_id: str | None,
    queue_name: str | None,
    source_queue: str,
    actor_name: str | None,
) -> DeadLetter:
    """A record that keeps only ids, where it came from and the raw body: nothing
    about the job could be read (or stored), so every job field is empty."""
    return _new_record(
        dedupe_key=dedupe_key,
        message_id=message_id,
        job_id=job_id,
        queue_name=queue_name,
        source_queue=source_queue,
        actor_name=actor_name,
        provider_namespace=None,
        resource_type=None,
        operation=None,
        request=None,
        priority=None,
        category=category,
        retryable=False,
        reason=category,
        error_type=None,
        error=error,
        traceback=None,
        attempts=0,
        max_retries=None,
        attempt_history=[],
        x_death=x_death,
        headers=headers,
        first_enqueued_ms=None,
        dead_lettered_ms=dead_lettered_ms,
        archived_ms=archived_ms,
        fingerprint=fingerprint(
            category=category,
            provider_namespace=None,
            resource_type=None,
            operation=None,
            error=fingerprint_error,
        ),
        body=body,
    )
