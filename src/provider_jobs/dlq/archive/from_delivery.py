"""dead_letter_from_delivery: one message taken from ``<queue>.XQ`` as a :class:`DeadLetter`.

It accepts every way a message reaches XQ:

- an *enriched* dead letter published by ``ClassifiedRetries``: the final
  error, category, traceback and attempt history are in ``options``;
- a *plain* Dramatiq dead letter, nacked by a worker and moved by RabbitMQ
  (``x-death`` headers): unknown actor, ``AgeLimit`` expiry, or the fallback
  when the enriched publish failed; its body holds the previous attempt's options;
- a body that is not JSON or not a Dramatiq message: kept byte for byte,
  category ``undecodable``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from dramatiq.common import q_name

from ...middleware.dead_letter_details import DeadLetterDetails
from .delivery import (
    decode_message,
    delivery_problem,
    final_failure,
    int_or_none,
    jsonable,
    last_death,
    text_or_none,
)
from .fingerprint import fingerprint
from .raw_records import raw_record
from .records import DeadLetter, new_record

__all__ = ["UNDECODABLE", "dead_letter_from_delivery"]

#: Category of a body that is not JSON or not a Dramatiq message.
UNDECODABLE = "undecodable"


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
        return raw_record(
            UNDECODABLE,
            error,
            dedupe_key="raw:" + hashlib.sha256(body + distinct.encode()).hexdigest(),
            message_id=text_or_none(amqp_message_id),
            job_id=None,
            queue_name=text_or_none(latest_death.get("queue")) or q_name(source_queue),
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
    namespace = text_or_none(job.get("provider_namespace")) if job else None
    resource_type = text_or_none(job.get("resource_type")) if job else None
    provider = text_or_none(options.get("provider"))
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
    category = text_or_none(failure.category) or "unknown"
    reason = text_or_none(failure.reason) or "unknown"
    error = text_or_none(failure.error) or ""
    request = job.get("request") if job and isinstance(job.get("request"), dict) else None
    operation = text_or_none((job.get("operation") if job else None) or options.get("operation"))
    priority = int_or_none(job.get("priority")) if job else None
    return new_record(
        dedupe_key=f"msg:{message['message_id']}",
        message_id=message["message_id"],
        job_id=text_or_none((job.get("job_id") if job else None) or options.get("job_id")),
        queue_name=q_name(message["queue_name"]),
        source_queue=source_queue,
        actor_name=message["actor_name"],
        provider_namespace=text_or_none(namespace),
        resource_type=text_or_none(resource_type),
        operation=operation,
        request=request,
        priority=priority if priority is not None else int_or_none(options.get("broker_priority")),
        category=category,
        retryable=failure.retryable if isinstance(failure.retryable, bool) else None,
        reason=reason,
        error_type=text_or_none(failure.error_type),
        error=error,
        traceback=text_or_none(failure.traceback),
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
            provider_namespace=text_or_none(namespace),
            resource_type=text_or_none(resource_type),
            operation=operation,
            error=error,
        ),
        body=body,
    )
