"""The RabbitMQ queues behind one actor queue, and what each is for."""

from __future__ import annotations

from dramatiq.common import dq_name, xq_name

from ..middleware.publisher import bucket_ms, delay_queue_name
from ..settings import Settings

__all__ = ["queue_roles"]


def queue_roles(settings: Settings) -> list[tuple[str, str]]:
    """``(name, role)`` of every queue a job of ``settings.queue_name`` can wait in.

    Roles: ``work`` (the queue itself), ``delay`` (Dramatiq's ``.DQ``),
    ``retry`` (our delay buckets ``.retry.<ms>`` for the configured fixed
    delays) and ``dead_letter`` (``.XQ``). With ``retry_backoff`` the bucket of
    each retry depends on its attempt and jitter, so no ``retry`` queue is listed.
    """
    queue = settings.queue_name
    roles = [(queue, "work"), (dq_name(queue), "delay")]
    if not settings.retry_backoff:
        delays_ms = {
            bucket_ms(int(d * 1000)) for d in (settings.retry_delay_s, *settings.operation_delays_s.values())
        }
        roles += [(delay_queue_name(queue, ms), "retry") for ms in sorted(delays_ms)]
    return [*roles, (xq_name(queue), "dead_letter")]
