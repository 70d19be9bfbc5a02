"""A worker process started by Dramatiq's CLI: its broker, and ProcessBoot, which sets the process up."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from ..errors import ConfigurationError
from ..log_config import configure_logging
from ..providers import ProviderRegistry, load_providers
from ..settings import Settings
from ..tracing import configure_tracing
from .broker import build_broker
from .provider_ops import declare_provider_actors

__all__ = ["ProcessBoot", "worker_broker"]

logger = logging.getLogger("provider_jobs.actors")


class ProcessBoot(Middleware):
    """When a worker process boots: configures structured logging, registers
    the providers named in settings and declares the job's queues.

    Args:
        registry: The registry the actors look providers up in.
        settings: ``log_format``, ``log_level``, ``providers`` and ``providers_file``.
        refuse: A settings error found earlier; the process logs it and exits.
    """

    def __init__(
        self, registry: ProviderRegistry, settings: Settings, *, refuse: ConfigurationError | None = None
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.refuse = refuse

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        configure_logging(
            log_format=self.settings.log_format,
            level=self.settings.log_level,
            redact_keys=self.settings.redact_keys,
        )
        try:
            if self.refuse is not None:
                raise self.refuse
            keys = load_providers(
                self.registry, spec=self.settings.providers, path=self.settings.providers_file
            )
        except Exception as exc:
            # A provider's own constructor may raise anything; the worker must not boot without it.
            logger.critical(
                "%s", exc if isinstance(exc, ConfigurationError) else f"Cannot load providers: {exc!r}"
            )
            # Dramatiq swallows Exceptions raised in after-hooks; a worker
            # misconfigured would dead-letter every job, so stop the process.
            raise SystemExit(2) from None
        logger.info("Loaded %d provider(s): %s", len(keys), ", ".join(keys) or "none")
        _check_queues(broker, self.settings.queue_name)


def worker_broker() -> RabbitmqBroker:
    """The broker of a worker process that Dramatiq's CLI starts, with the provider actors declared.

    Reads :class:`~provider_jobs.settings.Settings` from the environment; no
    connection is opened. A bad setting does not raise here: the process's
    :class:`ProcessBoot` logs it in one line and stops, where an exception
    would reach Dramatiq's CLI as a traceback. Only an entry point calls this
    (:mod:`provider_jobs.worker`).
    """
    refuse: ConfigurationError | None = None
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        settings, refuse = Settings(), exc
    try:
        # Traces from the standard OTEL_* variables; None (no tracing middleware) when none is set.
        tracer_provider = configure_tracing(service_name="provider-jobs-worker")
    except ConfigurationError as exc:
        tracer_provider, refuse = None, refuse or exc
    registry = ProviderRegistry()
    broker = build_broker(
        settings,
        middleware=[ProcessBoot(registry, settings, refuse=refuse)],
        tracer_provider=tracer_provider,
    )
    declare_provider_actors(broker, registry, settings)
    return broker


def _check_queues(broker: dramatiq.Broker, queue_name: str) -> None:
    """Declare the job's queues now: a queue of the other type (``PROVIDER_JOBS_QUEUE_TYPE``) stops
    the process with one line, where Dramatiq would restart the consumer every 3 s. An unreachable
    broker does not: the consumers wait for it as they always do."""
    if not isinstance(broker, RabbitmqBroker):
        return
    try:
        broker.declare_queue(queue_name, ensure=True)
    except ConfigurationError as exc:
        logger.critical("%s", exc)
        raise SystemExit(2) from None
    except Exception as exc:
        logger.warning("Could not declare %s at boot (%s); the consumers will", queue_name, exc)
