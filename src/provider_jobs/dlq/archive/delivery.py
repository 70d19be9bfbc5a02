"""Reading one XQ delivery: its body as a Dramatiq message, its x-death, its final failure.

Helpers of :func:`~.from_delivery.dead_letter_from_delivery`. A dead letter's failure
comes from ``options["dead_letter"]`` (a
:class:`~provider_jobs.middleware.dead_letter_details.DeadLetterDetails`) when
``ClassifiedRetries`` or the worker's consumer enriched it, else it is pieced
together from RabbitMQ's ``x-death`` headers, the age limit and the previous
attempt's options.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from ...envelope import MAX_TIMESTAMP_MS, misdelivery, read_message
from ...middleware.dead_letter_details import DeadLetterDetails
from ...middleware.dead_letters import CRASH_LOOP as CRASH_LOOP  # noqa: PLC0414 (written by the worker)
from ...middleware.dead_letters import DEAD_LETTER_HEADER as DEAD_LETTER_HEADER  # noqa: PLC0414

__all__ = [
    "AGE_LIMIT",
    "CRASH_LOOP",
    "DEAD_LETTER_HEADER",
    "DELIVERY_LIMIT",
    "REJECTED",
    "Failure",
    "decode_message",
    "delivery_problem",
    "final_failure",
    "int_or_none",
    "jsonable",
    "last_death",
    "ms_or_none",
    "text_or_none",
]

#: Category of a message ``AgeLimit`` refused because it was too old.
AGE_LIMIT = "age_limit"
#: x-death reason of a quorum queue's dead letter at its ``x-delivery-limit``.
DELIVERY_LIMIT = "delivery_limit"
#: Category of a message nacked with no failure recorded (unknown actor, plain ``fail()``).
REJECTED = "rejected"
#: Header values that are JSON-safe as they are.
_PLAIN = (str, int, float, bool)


def jsonable(value: Any) -> Any:
    """AMQP header values (datetimes, bytes, nested tables) as JSON-safe values."""
    # Most values are plain, or plain tables: answer them before the slower checks below
    # (a tuple of types is checked faster than a union, and a dict faster than a Mapping).
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def decode_message(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``body`` as a Dramatiq message dict, or ``None`` and why it is not one: what the worker's
    encoder accepts (:func:`~provider_jobs.envelope.read_message`), for the reason it refused it."""
    return read_message(body)


def delivery_problem(message: dict[str, Any], last_death: dict[str, Any]) -> str | None:
    """Why the worker refused ``message``, a valid envelope, when its last death says so, or ``None``.

    A message rejected on a queue other than the one it names was refused by
    the worker for that (:func:`~provider_jobs.envelope.misdelivery`).
    """
    queue = last_death.get("queue")
    if last_death.get("reason") != "rejected" or not isinstance(queue, str):
        return None
    problem = misdelivery(message["queue_name"], queue)
    return None if problem is None else f"body is not a Dramatiq message for its queue: {problem}"


def _last_traceback_line(traceback: str | None) -> str | None:
    if not traceback:
        return None
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def int_or_none(value: Any) -> int | None:
    """``value`` if it is an int (and not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def ms_or_none(value: Any) -> int | None:
    """``value`` if it is a time in ms since the epoch up to the end of year 9999, else ``None``:
    a hand-made header or option may hold any number, and the archive's columns hold 64 bits."""
    ms = int_or_none(value)
    return ms if ms is not None and 0 <= ms <= MAX_TIMESTAMP_MS else None


def text_or_none(value: Any) -> str | None:
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


class Failure(NamedTuple):
    """How a dead letter finally failed, as far as its delivery tells.

    A named tuple, not a frozen dataclass: one is made for every dead letter archived,
    and a tuple is made several times faster.
    """

    category: str
    reason: str
    error: str
    error_type: Any
    traceback: Any
    retryable: Any
    attempts: int
    dead_lettered_ms: int


def final_failure(
    message: dict[str, Any],
    *,
    history: list[dict[str, Any]],
    dead: DeadLetterDetails | None,
    headers: dict[str, Any],
    last_death: dict[str, Any],
    death_ms: int,
) -> Failure:
    """The final failure: from ``dead_letter`` when enriched, else pieced together
    from x-death, the age limit and the previous attempt."""
    options: dict[str, Any] = message["options"]
    if dead is not None:
        return Failure(
            category=dead.category or "unknown",
            reason=dead.reason or str(headers.get(DEAD_LETTER_HEADER) or "unknown"),
            error=dead.error or "",
            error_type=dead.error_type,
            traceback=dead.traceback,
            retryable=dead.retryable,
            attempts=dead.attempts or len(history),
            dead_lettered_ms=dead.dead_lettered_at_ms or death_ms,
        )
    reason = str(last_death.get("reason") or "direct")
    attempts = max(int_or_none(options.get("retries")) or 0, len(history))
    traceback = options.get("traceback")
    if reason == DELIVERY_LIMIT:
        return _delivery_limit_failure(last_death, traceback, attempts, death_ms)
    max_age = int_or_none(options.get("max_age"))
    timestamp = int_or_none(message.get("message_timestamp"))
    if max_age is not None and timestamp is not None and death_ms - timestamp >= max_age:
        error = f"message older than its age limit ({max_age} ms)"
        return Failure(AGE_LIMIT, AGE_LIMIT, error, None, traceback, False, attempts, death_ms)
    if history:
        last = history[-1]
        return Failure(
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
        return Failure("unknown", reason, error, None, traceback, None, attempts, death_ms)
    error = _unrecorded(reason, message["actor_name"], last_death.get("queue"))
    return Failure(REJECTED, reason, error, None, None, None, attempts, death_ms)


def _delivery_limit_failure(
    last_death: dict[str, Any], traceback: Any, attempts: int, death_ms: int
) -> Failure:
    """A quorum queue's ``x-delivery-limit`` dead letter: as the worker's own :data:`CRASH_LOOP`."""
    queue = last_death.get("queue")
    where = f" from {queue}" if isinstance(queue, str) else ""
    count = int_or_none(last_death.get("count")) or 1
    error = (
        f"RabbitMQ dead-lettered it{where} at the queue's delivery limit (x-delivery-limit), "
        f"{count} time(s): every delivery ended without an outcome (the worker process died "
        "running it); it was not run again"
    )
    return Failure(CRASH_LOOP, DELIVERY_LIMIT, error, "WorkerCrashLoop", traceback, False, attempts, death_ms)


def _unrecorded(reason: str, actor_name: str, queue: Any) -> str:
    """What a dead letter without a recorded failure went through, from its last death's ``reason``.

    Refusals by the worker that its body explains (not a message, a wrong
    queue) are told apart before; what is left of a rejection is an actor the
    worker does not know or a plain nack.
    """
    where = f" in {queue}" if isinstance(queue, str) else ""
    if reason == "rejected":
        return (
            f"rejected{where} without a recorded failure: the worker knows no actor {actor_name!r}, "
            "or middleware or another client rejected it"
        )
    if reason == "expired":
        return f"expired{where} before a worker took it (a message or queue TTL), without a recorded failure"
    if reason == "direct":
        return "published straight to the dead-letter queue, without a recorded failure"
    return f"dead-lettered{where} by RabbitMQ ({reason}) without a recorded failure"


def last_death(headers: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, dict[str, Any], int | None]:
    """The ``x-death`` list of JSON-safe ``headers``, its most recent entry and that death's time in ms.

    Returns:
        The whole list (``None`` without one), its latest entry (``{}`` without
        one) and the entry's time in ms since the epoch (``None`` without one).
    """
    x_death = headers.get("x-death") if isinstance(headers.get("x-death"), list) else None
    # RabbitMQ puts the most recent death first: a retry that waited in a TTL queue
    # (``<queue>.retry.<ms>``, reason ``expired``) and was then nacked has its
    # ``rejected`` entry at [0]. The whole list stays in the record.
    latest: dict[str, Any] = x_death[0] if x_death and isinstance(x_death[0], dict) else {}
    death_ms = int_or_none(latest.get("time"))
    if death_ms is not None and death_ms < 10**11:
        death_ms *= 1000  # pika may hand the AMQP timestamp over in seconds
    return x_death, latest, ms_or_none(death_ms)
