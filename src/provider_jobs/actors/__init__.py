"""Actors and broker: provider operations as Dramatiq actors on RabbitMQ.

Importing this package defines names and nothing else: it reads no settings,
opens no connection and sets no global broker. A producer builds its own
broker with :func:`build_broker` and declares the actors on it with
:func:`declare_provider_actors`; a worker that Dramatiq's CLI starts gets its
broker from the entry module :mod:`provider_jobs.worker`.
"""

from __future__ import annotations

from .boot import ProcessBoot, worker_broker
from .broker import MAX_PRIORITY, build_broker
from .provider_ops import ACTION_ACTOR, OPERATION_ACTORS, ProviderActor, actor_for, declare_provider_actors

__all__ = [
    "ACTION_ACTOR",
    "MAX_PRIORITY",
    "OPERATION_ACTORS",
    "ProcessBoot",
    "ProviderActor",
    "actor_for",
    "build_broker",
    "declare_provider_actors",
    "worker_broker",
]
