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
import functools
import hashlib
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dramatiq.common import q_name

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
]

#: Category of a body that is not JSON or not a Dramatiq message.
UNDECODABLE = "undecodable"
#: Category of a message ``AgeLimit`` refused because it was too old.
AGE_LIMIT = "age_limit"
#: Category of a message nacked with no failure recorded (unknown actor, plain ``fail()``).
REJECTED = "rejected"
#: Category of a dead letter the archive refused as parsed; kept as a minimal raw record.
UNARCHIVABLE = "unarchivable"
#: AMQP header ``ClassifiedRetries`` puts on enriched dead letters.
DEAD_LETTER_HEADER = "x-provider-jobs-dead-letter"
#: Keys a JSON body needs to be taken as a Dramatiq message.
_MESSAGE_KEYS = frozenset({"queue_name", "actor_name", "args", "kwargs", "options", "message_id"})

_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_HEX_ID = re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?")
_SPACES = re.compile(r"\s+")


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
        return _decode_message(self.body)[0]

    def to_dict(self, *, with_body: bool = False) -> dict[str, Any]:
        """A JSON-safe dict; the raw body is included (as text, lossy) only when asked."""
        data = dataclasses.asdict(self)
        body = data.pop("body")
        if with_body:
            data["body"] = body.decode("utf-8", errors="replace")
        data["provider"] = self.provider
        return data


def normalise_error(text: str) -> str:
    """``text`` with ids, numbers and quoted values replaced, so that failures
    with the same cause read the same."""
    text = _UUID.sub("<id>", text)
    text = _QUOTED.sub("<value>", text)
    text = _HEX_ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACES.sub(" ", text).strip()


def fingerprint(
    *,
    category: str,
    provider_namespace: str | None,
    resource_type: str | None,
    operation: str | None,
    error: str,
) -> str:
    """A 16-hex-digit key grouping dead letters by cause: category, provider,
    resource type, operation and the normalised error text."""
    return _fingerprint(category, provider_namespace or "", resource_type or "", operation or "", error)


# A failure storm repeats a handful of errors thousands of times: normalise each once.
@functools.lru_cache(maxsize=4096)
def _fingerprint(
    category: str, provider_namespace: str, resource_type: str, operation: str, error: str
) -> str:
    key = "\x1f".join((category, provider_namespace, resource_type, operation, normalise_error(error)))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """AMQP header values (datetimes, bytes, nested tables) as JSON-safe values."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _decode_message(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"body is not UTF-8 text: {exc}"
    except ValueError as exc:
        return None, f"body is not JSON: {exc}"
    if not isinstance(data, dict):
        return None, f"body is JSON but not an object ({type(data).__name__})"
    missing = _MESSAGE_KEYS - data.keys()
    if missing:
        return None, f"body is not a Dramatiq message: missing {', '.join(sorted(missing))}"
    if not isinstance(data["options"], dict) or not isinstance(data["kwargs"], dict):
        return None, "body is not a Dramatiq message: options and kwargs must be objects"
    return data, None


def _last_traceback_line(traceback: str | None) -> str | None:
    if not traceback:
        return None
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclasses.dataclass(frozen=True)
class _Failure:
    category: str
    reason: str
    error: str
    error_type: Any
    traceback: Any
    retryable: Any
    attempts: int
    dead_lettered_ms: int


def _failure(
    message: dict[str, Any],
    *,
    history: list[dict[str, Any]],
    dead: dict[str, Any] | None,
    headers: dict[str, Any],
    last_death: dict[str, Any],
    death_ms: int,
) -> _Failure:
    """The final failure: from ``dead_letter`` when enriched, else pieced together
    from x-death, the age limit and the previous attempt."""
    options: dict[str, Any] = message["options"]
    if dead is not None:
        return _Failure(
            category=str(dead.get("category") or "unknown"),
            reason=str(dead.get("reason") or headers.get(DEAD_LETTER_HEADER) or "unknown"),
            error=str(dead.get("error") or ""),
            error_type=dead.get("error_type"),
            traceback=dead.get("traceback"),
            retryable=dead.get("retryable"),
            attempts=_int_or_none(dead.get("attempts")) or len(history),
            dead_lettered_ms=_int_or_none(dead.get("dead_lettered_at_ms")) or death_ms,
        )
    reason = str(last_death.get("reason") or "direct")
    attempts = max(_int_or_none(options.get("retries")) or 0, len(history))
    traceback = options.get("traceback")
    max_age = _int_or_none(options.get("max_age"))
    timestamp = _int_or_none(message.get("message_timestamp"))
    if max_age is not None and timestamp is not None and death_ms - timestamp >= max_age:
        error = f"message older than its age limit ({max_age} ms)"
        return _Failure(AGE_LIMIT, AGE_LIMIT, error, None, traceback, False, attempts, death_ms)
    if history:
        last = history[-1]
        return _Failure(
            str(last.get("category") or "unknown"),
            reason,
            str(last.get("error") or ""),
            last.get("error_type"),
            traceback,
            last.get("retryable"),
            attempts,
            death_ms,
        )
    if isinstance(traceback, str) and traceback:
        error = _last_traceback_line(traceback) or "unknown error"
        return _Failure("unknown", reason, error, None, traceback, None, attempts, death_ms)
    error = f"{reason} without a recorded failure (unknown actor {message['actor_name']!r}, or a nack)"
    return _Failure(REJECTED, reason, error, None, None, None, attempts, death_ms)


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
    plain_headers: dict[str, Any] = _jsonable(dict(headers or {}))
    x_death = plain_headers.get("x-death") if isinstance(plain_headers.get("x-death"), list) else None
    # RabbitMQ puts the most recent death first: a retry that waited in a TTL queue
    # (``<queue>.retry.<ms>``, reason ``expired``) and was then nacked has its
    # ``rejected`` entry at [0]. The whole list stays in the record.
    last_death: dict[str, Any] = x_death[0] if x_death and isinstance(x_death[0], dict) else {}
    death_ms = _int_or_none(last_death.get("time"))
    if death_ms is not None and death_ms < 10**11:
        death_ms *= 1000  # pika may hand the AMQP timestamp over in seconds
    message, decode_error = _decode_message(body)

    if message is None:
        distinct = f"{death_ms}:{amqp_message_id}:{amqp_timestamp_s}"
        error = decode_error or "body is not a Dramatiq message"
        return DeadLetter(
            dedupe_key="raw:" + hashlib.sha256(body + distinct.encode()).hexdigest(),
            message_id=amqp_message_id,
            job_id=None,
            queue_name=last_death.get("queue") or q_name(source_queue),
            source_queue=source_queue,
            actor_name=None,
            provider_namespace=None,
            resource_type=None,
            operation=None,
            request=None,
            priority=None,
            category=UNDECODABLE,
            retryable=False,
            reason=UNDECODABLE,
            error_type=None,
            error=error,
            traceback=None,
            attempts=0,
            max_retries=None,
            attempt_history=[],
            x_death=x_death,
            headers=plain_headers,
            first_enqueued_ms=None,
            dead_lettered_ms=death_ms or now_ms,
            archived_ms=now_ms,
            # Group undecodable bodies by what is wrong with them, not by where.
            fingerprint=fingerprint(
                category=UNDECODABLE,
                provider_namespace=None,
                resource_type=None,
                operation=None,
                error=error.partition(":")[0],
            ),
            body=body,
        )

    options: dict[str, Any] = message["options"]
    kwargs: dict[str, Any] = message["kwargs"]
    job = kwargs.get("job") if isinstance(kwargs.get("job"), dict) else None
    job = job or (message["args"][0] if message["args"] and isinstance(message["args"][0], dict) else None)
    namespace = job.get("provider_namespace") if job else None
    resource_type = job.get("resource_type") if job else None
    if (not namespace or not resource_type) and isinstance(options.get("provider"), str):
        namespace, _, resource_type = options["provider"].partition("/")
    history = [h for h in options.get("attempt_history") or [] if isinstance(h, dict)]
    dead = options.get("dead_letter") if isinstance(options.get("dead_letter"), dict) else None
    message_timestamp = _int_or_none(message.get("message_timestamp"))

    failure = _failure(
        message,
        history=history,
        dead=dead,
        headers=plain_headers,
        last_death=last_death,
        death_ms=death_ms or now_ms,
    )
    category, reason, error = failure.category, failure.reason, failure.error
    request = job.get("request") if job and isinstance(job.get("request"), dict) else None
    operation = (job.get("operation") if job else None) or options.get("operation")
    priority = _int_or_none(job.get("priority")) if job else None
    return DeadLetter(
        dedupe_key=f"msg:{message['message_id']}",
        message_id=str(message["message_id"]),
        job_id=(job.get("job_id") if job else None) or options.get("job_id"),
        queue_name=q_name(str(message["queue_name"])),
        source_queue=source_queue,
        actor_name=str(message["actor_name"]),
        provider_namespace=namespace or None,
        resource_type=resource_type or None,
        operation=operation,
        request=request,
        priority=priority if priority is not None else _int_or_none(options.get("broker_priority")),
        category=category,
        retryable=failure.retryable if isinstance(failure.retryable, bool) else None,
        reason=reason,
        error_type=failure.error_type if isinstance(failure.error_type, str) else None,
        error=error,
        traceback=failure.traceback if isinstance(failure.traceback, str) else None,
        attempts=failure.attempts,
        max_retries=_int_or_none((dead or {}).get("max_retries")),
        attempt_history=history,
        x_death=x_death,
        headers=plain_headers,
        first_enqueued_ms=message_timestamp,
        dead_lettered_ms=failure.dead_lettered_ms,
        archived_ms=now_ms,
        fingerprint=fingerprint(
            category=category,
            provider_namespace=namespace or None,
            resource_type=resource_type or None,
            operation=operation,
            error=error,
        ),
        body=body,
    )


def quarantined(record: DeadLetter, storage_error: str) -> DeadLetter:
    """A minimal record of ``record`` for when the archive refused it as parsed.

    Only what any database accepts is kept: the ids, the source queue, the raw
    body byte for byte and the storage error, with category ``unarchivable``,
    so that one bad dead letter is kept (and visible) instead of blocking
    every one behind it.
    """
    error = f"archive refused the record: {storage_error}"
    return DeadLetter(
        dedupe_key=record.dedupe_key,
        message_id=record.message_id,
        job_id=record.job_id,
        queue_name=record.queue_name,
        source_queue=record.source_queue,
        actor_name=record.actor_name,
        provider_namespace=None,
        resource_type=None,
        operation=None,
        request=None,
        priority=None,
        category=UNARCHIVABLE,
        retryable=False,
        reason=UNARCHIVABLE,
        error_type=None,
        error=error,
        traceback=None,
        attempts=0,
        max_retries=None,
        attempt_history=[],
        x_death=None,
        headers={},
        first_enqueued_ms=None,
        dead_lettered_ms=record.dead_lettered_ms,
        archived_ms=record.archived_ms,
        fingerprint=fingerprint(
            category=UNARCHIVABLE, provider_namespace=None, resource_type=None, operation=None, error=error
        ),
        body=record.body,
    )
