"""The provider-operation actors: one per standard operation, one for provider actions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import dramatiq

from ..errors import InvalidJob
from ..health import HealthSync
from ..ids import new_uuid4
from ..jobs import STANDARD_OPERATIONS, ProviderJob, parse_job
from ..providers import ProviderRegistry
from ..settings import Settings

__all__ = ["ACTION_ACTOR", "OPERATION_ACTORS", "ProviderActor", "actor_for", "declare_provider_actors"]

#: Actor name for each standard operation.
OPERATION_ACTORS: Mapping[str, str] = {op: f"{op}_resource" for op in STANDARD_OPERATIONS}
#: Actor that runs provider-defined actions (any other operation).
ACTION_ACTOR = "run_provider_action"

logger = logging.getLogger("provider_jobs.actors")


def actor_for(operation: str) -> str:
    """The name of the actor that runs ``operation``."""
    return OPERATION_ACTORS.get(operation, ACTION_ACTOR)


def _job_data(actor_name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    if (args and kwargs) or len(args) > 1:
        raise InvalidJob(
            f"Validation error: {actor_name} takes one job, got args={args!r} kwargs={dict(kwargs)!r}"
        )
    if args:
        return args[0]
    if set(kwargs) == {"job"}:
        return kwargs["job"]
    return dict(kwargs)


class ProviderActor(dramatiq.Actor):  # type: ignore[type-arg]
    """An actor whose messages carry one validated :class:`ProviderJob`.

    ``send(job)``, ``send(job=job)`` and ``send(provider_namespace=..., ...)``
    all work; an invalid job raises :class:`~provider_jobs.errors.InvalidJob`
    at ``send()`` time and nothing is published. The job's priority becomes
    the RabbitMQ priority.
    """

    #: The operation this actor runs; ``None`` for the provider-action actor.
    operation: str | None = None

    def coerce_job(self, data: Any) -> ProviderJob:
        """Validate ``data`` as a job for this actor's operation.

        Raises:
            InvalidJob: It is not a valid job, or names another operation.
        """
        if self.operation is not None and isinstance(data, Mapping) and "operation" not in data:
            data = {**data, "operation": self.operation}
        job = parse_job(data)
        if self.operation is not None and job.operation != self.operation:
            raise InvalidJob(
                f"Validation error: {self.actor_name} runs {self.operation!r} jobs, not {job.operation!r}"
            )
        if self.operation is None and job.operation in OPERATION_ACTORS:
            raise InvalidJob(
                f"Validation error: {job.operation!r} jobs go to {OPERATION_ACTORS[job.operation]}, "
                f"not {self.actor_name}"
            )
        return job

    def message_with_options(
        self, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> dramatiq.Message[Any]:
        return self.message_for(self.coerce_job(_job_data(self.actor_name, args, kwargs or {})), **options)

    def message_for(self, job: ProviderJob, **options: Any) -> dramatiq.Message[Any]:
        """The message ``send(job)`` publishes, for a job :meth:`coerce_job` already accepted."""
        options.setdefault("broker_priority", job.priority)
        options.update(job_id=job.job_id, provider=job.provider, operation=job.operation)
        # Dramatiq's message_with_options, with the message id from a pool (uuid4 costs 3 µs).
        for name in ("on_failure", "on_success"):
            callback = options.get(name)
            if isinstance(callback, dramatiq.Actor):
                options[name] = callback.actor_name
            elif not isinstance(callback, type(None) | str):
                raise TypeError(name + " value must be an Actor")
        return dramatiq.Message(
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            args=(),
            kwargs={"job": job.to_message()},
            options=options,
            message_id=new_uuid4(),
        )


def declare_provider_actors(
    broker: dramatiq.Broker, registry: ProviderRegistry | None, settings: Settings
) -> dict[str, ProviderActor]:
    """Declare the provider-operation actors on ``broker``.

    Args:
        broker: The broker to declare them on.
        registry: Where workers look providers up; ``None`` for a producer
            that only sends (running a job then fails as provider not found).
        settings: Queue name and per-operation retry delays.

    Returns:
        Actor name to actor: ``create_resource``, ``get_resource``,
        ``update_resource``, ``delete_resource`` and ``run_provider_action``.
    """
    providers = registry if registry is not None else ProviderRegistry()
    for middleware in broker.middleware:
        if isinstance(middleware, HealthSync) and middleware.registry is None:
            # The worker announces the providers its actors look up.
            middleware.registry = providers

    def declare(name: str, operation: str | None) -> ProviderActor:
        def run(*args: Any, **kwargs: Any) -> None:
            job = actor.coerce_job(_job_data(name, args, kwargs))
            provider = providers.get(job.provider_namespace, job.resource_type)
            result = provider.execute(job)
            logger.debug("Job %s returned %r", job.job_id, result, extra={"job_id": job.job_id})

        run.__name__ = name
        options: dict[str, Any] = {}
        if operation is not None:
            options["retry_delay_ms"] = int(settings.delay_s_for(operation) * 1000)
        actor = ProviderActor(
            run, actor_name=name, queue_name=settings.queue_name, priority=0, broker=broker, options=options
        )
        actor.operation = operation
        return actor

    actors = {name: declare(name, op) for op, name in OPERATION_ACTORS.items()}
    actors[ACTION_ACTOR] = declare(ACTION_ACTOR, None)
    return actors
