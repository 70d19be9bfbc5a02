"""``dramatiq fault_cli_app``: the fault workload's actors for the Dramatiq CLI, configured by
``PROVIDER_JOBS_*`` settings (``PYTHONPATH`` must hold ``tests/faults`` and ``tests``).

The broker is built when the CLI imports this module, as the CLI requires; nothing else imports it.
"""

from __future__ import annotations

import dramatiq

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.settings import Settings

from fault_workload import fault_registry

settings = Settings.from_env()
broker = build_broker(settings)
dramatiq.set_broker(broker)
actors = declare_provider_actors(broker, fault_registry(), settings)
