"""Actors and broker: provider operations as Dramatiq actors on RabbitMQ.

Importing this package is what ``dramatiq provider_jobs.actors`` does, so it is
the one import with an effect: it reads :class:`~provider_jobs.settings.Settings`
from the environment, builds the broker (no connection is opened yet), makes
it Dramatiq's global broker and declares the actors on it. Providers are
loaded from ``PROVIDER_JOBS_PROVIDERS`` / ``PROVIDER_JOBS_PROVIDERS_FILE`` when
the worker process boots, not at import.
"""

from __future__ import annotations

import dramatiq

from ..errors import ConfigurationError
from ..providers import ProviderRegistry
from ..settings import Settings
from .boot import ProcessBoot
from .broker import MAX_PRIORITY, build_broker
from .provider_ops import ACTION_ACTOR, OPERATION_ACTORS, ProviderActor, actor_for, declare_provider_actors

__all__ = [
    "ACTION_ACTOR",
    "MAX_PRIORITY",
    "OPERATION_ACTORS",
    "ProcessBoot",
    "ProviderActor",
    "actor_for",
    "broker",
    "build_broker",
    "create_resource",
    "declare_provider_actors",
    "delete_resource",
    "get_resource",
    "registry",
    "run_provider_action",
    "settings",
    "update_resource",
]

try:
    #: Settings of the global broker, read once here.
    settings = Settings.from_env()
    _settings_error: ConfigurationError | None = None
except ConfigurationError as exc:
    # Other modules import this package for build_broker & co; a bad variable
    # must not break them at import. A Dramatiq CLI worker refuses to boot instead.
    settings, _settings_error = Settings(), exc
#: Providers of workers started with ``dramatiq provider_jobs.actors``.
registry = ProviderRegistry()
#: Dramatiq's global broker.
broker = build_broker(settings, middleware=[ProcessBoot(registry, settings, refuse=_settings_error)])
dramatiq.set_broker(broker)

_actors = declare_provider_actors(broker, registry, settings)
create_resource = _actors["create_resource"]
get_resource = _actors["get_resource"]
update_resource = _actors["update_resource"]
delete_resource = _actors["delete_resource"]
run_provider_action = _actors["run_provider_action"]
