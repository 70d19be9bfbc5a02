"""Replay messages: JSON merge patches, and the fresh message rebuilt from a dead one."""

from __future__ import annotations

import time
from typing import Any

from ...errors import InvalidJob, NotReplayable
from ...ids import new_uuid4
from ...jobs import STANDARD_OPERATIONS, parse_job
from ...json_bodies import write_json
from ...rabbitmq.bulk import OutgoingMessage
from ...tracing import move_to_replay_of
from .report import PlannedRecord

__all__ = ["merge_patch", "outgoing", "prepare_message", "unstorable"]

#: Options a replay does not carry over: the failure's story, and a wait for a circuit breaker
#: (a replay waits afresh, or a job dead-lettered as provider_down would be at once again).
_DROPPED_OPTIONS = frozenset(
    {
        "attempt_history",
        "dead_letter",
        "traceback",
        "requeue_timestamp",
        "eta",
        "breaker",
        "breaker_waiting_since_ms",
        "breaker_waits",
    }
)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7396): objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def unstorable(value: Any) -> str | None:
    """What in ``value`` (text, or JSON at any depth) no archive can store, or ``None``.

    PostgreSQL refuses a NUL character in text and JSON; a lone surrogate is not
    UTF-8 at all. Checked before a replay sends anything, so that a message is
    never published for a record its reason or edit then fails to mark.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a lone surrogate (not UTF-8)"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def _actor_kind(operation: Any) -> Any:
    """Operations that one actor runs share a kind: each standard one its own, every action one."""
    return operation if operation in STANDARD_OPERATIONS else None


def prepare_message(
    record: PlannedRecord,
    message: dict[str, Any],
    request_patch: dict[str, Any] | None,
    job_patch: dict[str, Any] | None,
) -> dict[str, Any]:
    """The message replaying ``record`` sends, edited by the patches, before its new id and time.

    The job keeps its idempotency key unless an edit changes it: a plain replay
    re-runs the same operation, which a provider that saw it complete can
    dedupe; an edited job gets :meth:`~provider_jobs.jobs.ProviderJob.rekeyed`'s
    key, unless the job patch names ``idempotency_key`` itself (``null``
    restores the job id).

    Raises:
        InvalidJob: An edit makes the job invalid.
        NotReplayable: An edit was asked for a message that holds no provider job.
    """
    options = {k: v for k, v in message["options"].items() if k not in _DROPPED_OPTIONS}
    options.update(retries=0, replay_of=record.id, replay_of_message_id=record.message_id)
    # A replay is a new trace; the dead job's trace context stays as the one it links to.
    move_to_replay_of(options)
    kwargs = dict(message["kwargs"])
    job_data = kwargs.get("job")
    if isinstance(job_data, dict):
        original = job_data
        operation = job_data.get("operation")
        job_data = merge_patch(job_data, job_patch) if job_patch is not None else job_data
        edited_operation = job_data.get("operation") if isinstance(job_data, dict) else operation
        if _actor_kind(edited_operation) != _actor_kind(operation):
            # The message goes to the actor it names; another operation's actor would refuse it.
            raise InvalidJob(
                f"Record {record.id}: an edit cannot change the operation from {operation!r} to "
                f"{edited_operation!r} (another actor runs it); submit a new job instead; nothing was sent"
            )
        if request_patch is not None and isinstance(job_data, dict):
            job_data = {**job_data, "request": merge_patch(job_data.get("request"), request_patch)}
        try:
            job = parse_job(job_data)
        except InvalidJob as exc:
            raise InvalidJob(f"Record {record.id}: {exc}; nothing was sent") from None
        if job_data != original and "idempotency_key" not in (job_patch or {}):
            # An edited job is another operation: a provider must not dedupe it against the original.
            job = job.rekeyed()
        kwargs["job"] = job.to_message()
        options.update(
            broker_priority=job.priority,
            job_id=job.job_id,
            provider=job.provider,
            operation=job.operation,
        )
    elif request_patch is not None or job_patch is not None:
        raise NotReplayable(f"Record {record.id}: the message holds no provider job to edit")
    return {
        **message,
        "queue_name": record.queue_name or message["queue_name"],
        "kwargs": kwargs,
        "options": options,
    }


# -- sending ------------------------------------------------------------------


def outgoing(prepared: dict[str, Any], *, tracer: Any = None) -> tuple[dict[str, Any], OutgoingMessage, Any]:
    """``prepared`` stamped with a new ``message_id`` and the time now, as it is published, and
    its open ``send`` span (``None`` without a tracer).

    Args:
        prepared: The message :func:`prepare_message` made.
        tracer: An OpenTelemetry tracer: the replay's ``send`` span starts its new trace, linked to
            the replayed job's, and its context goes into the message; the publisher ends it.
            Default ``None``: no span.
    """
    # Stamped when it goes out, not when the batch was planned (AgeLimit, pacing).
    message = {
        **prepared,
        "message_id": new_uuid4(),
        "message_timestamp": int(time.time() * 1000),
    }
    span = None
    if tracer is not None:
        from ...tracing import replay_send

        message["options"] = dict(message["options"])
        span = replay_send(tracer, message)
    sent = OutgoingMessage(
        routing_key=message["queue_name"],
        body=write_json(message),
        priority=message["options"].get("broker_priority"),
        message_id=message["message_id"],
    )
    return message, sent, span
