"""A known workload for the metrics tests: jobs that succeed, recover, fail for good, never recover.

Imported by the in-process tests, by ``metrics_worker_app`` in ``dramatiq`` CLI
worker processes, and by the tests that start those processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dramatiq.middleware import CurrentMessage
from prometheus_client import CollectorRegistry

from external_tools import consumer_count
from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.errors import ProviderTimeout, ValidationFailed
from provider_jobs.jobs import ProviderJob
from provider_jobs.middleware import metrics_registry
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.settings import Settings

from support import wait_for

NAMESPACE = "Test.Metrics"
RESOURCE_TYPE = "Workload"
PROVIDER = f"{NAMESPACE}/{RESOURCE_TYPE}"


def _handle(job: ProviderJob) -> Any:
    behaviour = job.request["behaviour"]
    if behaviour == "permanent":
        raise ValidationFailed("Validation error: the workload says no")
    if behaviour == "down":
        raise ProviderTimeout("Connection timeout")
    if behaviour == "flaky":
        message = CurrentMessage.get_current_message()
        assert message is not None
        if message.options.get("retries", 0) < 1:
            raise ProviderTimeout("Connection timeout")
    return {"ok": True}


def workload_registry() -> ProviderRegistry:
    """A registry whose one provider behaves as each job's ``request["behaviour"]`` says."""
    registry = ProviderRegistry()
    registry.register(NAMESPACE, RESOURCE_TYPE, FunctionProvider({"create": _handle}))
    return registry


@dataclass(frozen=True)
class Workload:
    """How many jobs of each kind to send; with 3 attempts a ``down`` job retries twice."""

    succeed: int
    flaky: int
    permanent: int
    down: int

    def jobs(self) -> list[dict[str, Any]]:
        kinds = {"ok": self.succeed, "flaky": self.flaky, "permanent": self.permanent, "down": self.down}
        return [
            {
                "provider_namespace": NAMESPACE,
                "resource_type": RESOURCE_TYPE,
                "operation": "create",
                "request": {"behaviour": behaviour, "n": n},
            }
            for behaviour, count in kinds.items()
            for n in range(count)
        ]

    def expected(self, max_attempts: int = 3) -> Mapping[str, int]:
        """The counts a correct ``Metrics`` reports after this workload."""
        down_retries = self.down * (max_attempts - 1)
        return {
            "processed": self.succeed + self.flaky,
            "retries": self.flaky + down_retries,
            "failed": self.permanent + self.down,
            "attempts": self.succeed + 2 * self.flaky + self.permanent + self.down * max_attempts,
        }


# -- the workload on ``dramatiq`` CLI workers, in prometheus multiprocess mode ----------

TESTS_DIR = Path(__file__).parent


def send_jobs(settings: Settings, jobs: list[dict[str, Any]], **options: Any) -> None:
    """Publish ``jobs`` to ``create_resource`` on ``settings.queue_name``."""
    broker = build_broker(settings)
    actors = declare_provider_actors(broker, None, settings)
    try:
        for job in jobs:
            actors["create_resource"].send_with_options(kwargs=job, **options)
    finally:
        broker.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def cli_workers(settings: Settings, metrics_dir: Path, *, processes: int) -> Iterator[Path]:
    """``dramatiq metrics_worker_app`` with ``processes`` processes writing to ``metrics_dir``.

    Yields once every process consumes the queue; yields the log file. The
    workers are stopped (SIGTERM) afterwards.
    """
    metrics_dir.mkdir(exist_ok=True)
    log_path = metrics_dir.parent / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS_DIR),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_RETRY_DELAY_S": str(settings.retry_delay_s),
        "PROVIDER_JOBS_BREAKER_MIN_CALLS": str(settings.breaker_min_calls),
    }
    env.pop("PROVIDER_JOBS_WORKER_ID", None)
    command = [sys.executable, "-m", "dramatiq", "metrics_worker_app", "--processes", str(processes),
               "--threads", "1", "--worker-shutdown-timeout", "5000"]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Every process consumes before jobs arrive, so that each gets some.
        wait_for(lambda: consumer_count(settings.broker_url, settings.queue_name) == processes, timeout_s=30)
        yield log_path
    except AssertionError:
        _stop(process)
        raise AssertionError(log_path.read_text()[-3000:]) from None
    finally:
        _stop(process)


def run_cli_workload(
    settings: Settings, metrics_dir: Path, workload: Workload, expected: Mapping[str, int], *, processes: int
) -> None:
    """Run ``workload`` on CLI workers until ``metrics_dir`` shows the ``expected`` counts."""
    with cli_workers(settings, metrics_dir, processes=processes):
        send_jobs(settings, workload.jobs())
        wait_for(lambda: counts(metrics_registry(path=str(metrics_dir))) == expected, timeout_s=40)


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def counts(registry: CollectorRegistry) -> dict[str, int]:
    """The outcome counters, in the shape of :meth:`Workload.expected`."""
    return {
        "processed": int(total(registry, "worker_jobs_processed_total")),
        "retries": int(total(registry, "worker_job_retries_total")),
        "failed": int(total(registry, "worker_jobs_failed_total")),
        "attempts": int(total(registry, "worker_job_duration_seconds_count")),
    }
