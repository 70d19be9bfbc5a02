"""The alert rules and the Grafana dashboard refer only to metrics that something exposes."""

from __future__ import annotations

import json
from typing import Any

from deploy_support import DASHBOARD, RULES, metric_names_in, sample_names
from prometheus_client import CollectorRegistry

from provider_jobs.api import ArchiveCollector, QueueCollector
from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.middleware import Metrics
from provider_jobs.middleware.breaker import ProviderBreakers
from provider_jobs.settings import Settings


def _exposed(settings: Settings) -> set[str]:
    api = CollectorRegistry()
    api.register(QueueCollector(settings))
    api.register(ArchiveCollector(DeadLetterArchive("sqlite://")))
    breakers = CollectorRegistry()
    ProviderBreakers(registry=breakers)
    return sample_names(Metrics().registry, api, breakers) | _dlq_names()


def _dlq_names() -> set[str]:
    from prometheus_client import REGISTRY

    import provider_jobs.dlq.archiver.metrics  # noqa: F401 - registers the archiver's metrics

    return {name for name in sample_names(REGISTRY) if name.startswith("provider_jobs_dlq_")}


def _dashboard_exprs() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_metric_in_the_alert_rules_is_exposed(settings: Settings, amqp: Any) -> None:
    assert metric_names_in(RULES.read_text()) <= _exposed(settings)


def test_every_metric_on_the_dashboard_is_exposed(settings: Settings, amqp: Any) -> None:
    used = set().union(*(metric_names_in(expr) for expr in _dashboard_exprs()))

    assert used <= _exposed(settings), used - _exposed(settings)


def test_the_dashboard_shows_the_documented_counters() -> None:
    used = set().union(*(metric_names_in(expr) for expr in _dashboard_exprs()))

    assert {"worker_jobs_processed_total", "worker_job_retries_by_category_total",
            "worker_jobs_failed_by_category_total", "worker_job_duration_seconds_bucket"} <= used  # fmt: skip
