"""What the API's ``/metrics`` serves: queue depths read at scrape time, plus every process's metrics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..errors import BrokerUnavailable
from ..middleware.metrics import metrics_registry, multiprocess_dir
from ..rabbitmq.queue_stats import read_queue_stats
from ..settings import Settings

__all__ = ["QueueCollector", "api_registry"]


class QueueCollector(Collector):
    """Reads queue depths from RabbitMQ at each scrape.

    Exposes ``provider_jobs_broker_up``, and per queue (``queue``, ``role``)
    ``provider_jobs_queue_messages_ready`` and ``provider_jobs_queue_consumers``.

    Args:
        settings: Broker URL and queue name.
        timeout_s: Connection timeout per scrape in seconds. Default 2.
    """

    def __init__(self, settings: Settings, *, timeout_s: float = 2.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "provider_jobs_broker_up", "Whether RabbitMQ answered the last scrape (1) or not (0)."
        )
        try:
            stats = read_queue_stats(self.settings, timeout_s=self.timeout_s)
        except BrokerUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        ready = GaugeMetricFamily(
            "provider_jobs_queue_messages_ready", "Messages ready in the queue.", labels=["queue", "role"]
        )
        consumers = GaugeMetricFamily(
            "provider_jobs_queue_consumers", "Consumers attached to the queue.", labels=["queue", "role"]
        )
        for stat in stats:
            ready.add_metric([stat.name, stat.role], stat.messages_ready)
            consumers.add_metric([stat.name, stat.role], stat.consumers)
        yield ready
        yield consumers


class _Forward(Collector):
    """Exposes another registry's metrics (this process's default registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def api_registry(settings: Settings, *extra: Collector) -> CollectorRegistry:
    """The registry behind the API's ``/metrics``.

    Queue depths, then, in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``),
    the metrics of every process writing to that directory (workers and the
    archiver on the same host), otherwise this process's default registry.

    Args:
        settings: Broker URL and queue name.
        extra: More collectors, for example archive gauges.
    """
    registry = CollectorRegistry()
    registry.register(QueueCollector(settings))
    if multiprocess_dir() is not None:
        registry.register(_Forward(metrics_registry()))
    else:
        registry.register(_Forward(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return registry
