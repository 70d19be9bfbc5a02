"""A worker module for ``dramatiq metrics_worker_app``: our broker (with Metrics), the workload provider.

Settings come from ``PROVIDER_JOBS_*``; ``PROMETHEUS_MULTIPROC_DIR`` puts
prometheus-client in multiprocess mode.
"""

from __future__ import annotations

import dramatiq

from metrics_workload import workload_registry
from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.settings import Settings

settings = Settings.from_env()
broker = build_broker(settings)
dramatiq.set_broker(broker)
actors = declare_provider_actors(broker, workload_registry(), settings)
