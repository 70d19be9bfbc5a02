"""Minimal records of a dead letter whose job could not be read, or that the archive refused as
parsed: its ids, where it came from and its raw body byte for byte, every job field empty, so
that one bad dead letter is kept (and visible) instead of blocking every one behind it."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from .delivery import ms_or_none, text_or_none
from .fingerprint import fingerprint
from .records import DeadLetter, new_record

__all__ = ["UNARCHIVABLE", "quarantined", "raw_record", "unreadable"]

#: Category of a dead letter the archive refused as parsed; kept as a minimal raw record.
UNARCHIVABLE = "unarchivable"


def quarantined(record: DeadLetter, storage_error: str) -> DeadLetter:
    """A minimal record of ``record`` for when the archive refused it as parsed.

    Only what any database accepts is kept: the ids (as text any database
    takes), the source queue, the raw body byte for byte and the storage error,
    with category ``unarchivable``, so that one bad dead letter is kept (and
    visible) instead of blocking every one behind it.
    """
    error = text_or_none(f"archive refused the record: {storage_error}") or "archive refused the record"
    return raw_record(
        UNARCHIVABLE,
        error,
        dedupe_key=text_or_none(record.dedupe_key) or record.dedupe_key,
        message_id=text_or_none(record.message_id),
        job_id=text_or_none(record.job_id),
        queue_name=text_or_none(record.queue_name),
        source_queue=record.source_queue,
        actor_name=text_or_none(record.actor_name),
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
    message_id = text_or_none(amqp_message_id)
    distinct = f"unreadable:{message_id}:{amqp_timestamp_s!s:.40}"
    text = text_or_none(f"could not read the dead letter: {type(error).__name__}: {error}"[:2000]) or ""
    return raw_record(
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


def raw_record(
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
    return new_record(
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
