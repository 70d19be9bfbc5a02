"""Delivery counts: what a redelivered job carries in its headers, and when it is a crash loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import dramatiq

from ..middleware.dead_letter_details import DeadLetterDetails
from ..middleware.dead_letters import CRASH_LOOP, DEAD_LETTER_HEADER

__all__ = [
    "CRASHES_HEADER",
    "DELIVERIES_HEADER",
    "SUSPECT_HEADER",
    "Recount",
    "crash_loop_body",
    "recount",
    "suspects_queue_name",
]

#: AMQP header of a job's copy: how many of its deliveries ended without an outcome, plus one.
DELIVERIES_HEADER = "x-provider-jobs-deliveries"
#: AMQP header of a job's copy: crashes counted against it (deliveries that ended without an
#: outcome while it ran alone in its process, and the suspicion that led there).
CRASHES_HEADER = "x-provider-jobs-crashes"
#: AMQP header of a job's copy: 1 when a delivery ended without an outcome while other jobs were
#: in the same process; it runs alone from then on.
SUSPECT_HEADER = "x-provider-jobs-suspect"


def suspects_queue_name(queue_name: str) -> str:
    """The queue beside ``queue_name`` where jobs suspected of killing their worker wait."""
    return f"{queue_name}.suspects"


@dataclass(frozen=True, slots=True)
class Recount:
    """A redelivery's counts after one more delivery ended without an outcome."""

    #: The headers of its copy.
    headers: dict[str, Any]
    #: Deliveries that ended without an outcome.
    deliveries: int
    #: Crashes counted against it.
    crashes: int
    #: Whether a limit is reached: it is dead-lettered as :data:`CRASH_LOOP`, not run again.
    crash_loop: bool


def recount(
    headers: dict[str, Any] | None,
    *,
    suspect: bool,
    suspects_kept: bool,
    max_crashes: int | None,
    max_deliveries: int | None,
) -> Recount:
    """Count a redelivery whose AMQP headers are ``headers``.

    ``suspect``: it came from the suspects' queue, so it was its process's one
    suspect and the crash was its own (counted with the suspicion that led
    there). Otherwise it becomes a suspect, if ``suspects_kept``, with nothing
    counted against it.
    """
    headers = dict(headers or {})
    ended = _count(headers.get(DELIVERIES_HEADER))
    crashes = _number(headers.get(CRASHES_HEADER))
    if suspect:
        crashes += 1 + _number(headers.pop(SUSPECT_HEADER, 0))
        headers[CRASHES_HEADER] = crashes
    elif suspects_kept:
        headers[SUSPECT_HEADER] = 1
    over_crashes = max_crashes is not None and crashes >= max_crashes
    over_deliveries = max_deliveries is not None and ended >= max_deliveries
    crash_loop = over_crashes or over_deliveries
    if crash_loop:
        headers[DELIVERIES_HEADER] = ended
        headers[DEAD_LETTER_HEADER] = CRASH_LOOP
    else:
        headers[DELIVERIES_HEADER] = ended + 1
    return Recount(headers=headers, deliveries=ended, crashes=crashes, crash_loop=crash_loop)


def crash_loop_body(body: bytes, deliveries: int, crashes: int, worker_id: str | None) -> bytes:
    """The message with a :data:`CRASH_LOOP` dead letter's details in its options (the body as it
    was when it is not a Dramatiq message: the archive keeps it byte for byte)."""
    try:
        message = dramatiq.Message.decode(body)
        if not isinstance(message.options, dict):
            return body
        retries, max_retries = (_int_or_none(message.options.get(key)) for key in ("retries", "max_retries"))
        details = DeadLetterDetails(
            reason=CRASH_LOOP,
            category=CRASH_LOOP,
            retryable=False,
            error_type="WorkerCrashLoop",
            error=(
                f"The worker process died while running this job, {crashes} times (alone in its process "
                f"at least once; {deliveries} deliveries without an outcome); it was not run again"
            ),
            traceback=None,
            attempts=(retries or 0) + 1,
            max_retries=max_retries,
            deliveries=deliveries,
            crashes=crashes,
            worker_id=worker_id,
            queue_name=message.queue_name,
            dead_lettered_at_ms=int(time.time() * 1000),
        )
    except Exception:
        return body
    message.options["dead_letter"] = details.as_option()
    return bytes(message.encode())


def _number(value: Any) -> int:
    """A count from a header a hand-made message may hold anything in: 0 unless a positive int."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, 1_000_000)
    return 0


def _count(value: Any) -> int:
    """The deliveries a :data:`DELIVERIES_HEADER` value says ended without an outcome: at least 1,
    since the message is redelivered; whatever a hand-made header holds."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 1:
        return min(value, 1_000_000)
    return 1


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
