"""Metrics against a real broker: counts after a known workload, in one process and in several."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.common import xq_name

from external_tools import require_tool
from metrics_workload import PROVIDER, Workload, counts, run_cli_workload, send_jobs, total, workload_registry
from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.middleware import Metrics, metrics_registry, render_metrics
from provider_jobs.providers import FunctionProvider
from provider_jobs.settings import Settings

from support import queue_depth, wait_for

WORKLOAD = Workload(succeed=4, flaky=2, permanent=2, down=1)


@pytest.fixture
def worker(settings: Settings, amqp: Any) -> Iterator[dramatiq.Broker]:
    """A real worker built by ``build_broker`` (``Metrics`` is in its list) with the workload provider."""
    broker = build_broker(settings)
    registry = workload_registry()
    declare_provider_actors(broker, registry, settings)
    broker.registry = registry  # type: ignore[attr-defined]
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=20)
    worker.start()
    yield broker
    worker.stop()
    broker.close()


@pytest.fixture
def metrics(worker: dramatiq.Broker) -> Metrics:
    """The broker's own ``Metrics`` middleware."""
    [found] = [m for m in worker.middleware if isinstance(m, Metrics)]
    return found


def test_counts_equal_a_known_workload(settings: Settings, metrics: Metrics, worker: Any, amqp: Any) -> None:
    send_jobs(settings, WORKLOAD.jobs())

    expected = dict(WORKLOAD.expected(settings.max_attempts))
    wait_for(lambda: counts(metrics.registry) == expected, timeout_s=20)

    assert counts(metrics.registry) == expected
    # Counted when the job failed for good; its dead letter is published by the consumer just after.
    wait_for(lambda: queue_depth(amqp, xq_name(settings.queue_name)) == expected["failed"], timeout_s=10)
    assert (
        total(metrics.registry, "worker_jobs_processed_total", worker_id="test-worker")
        == expected["processed"]
    )


def test_retries_and_failures_are_counted_by_category(
    settings: Settings, metrics: Metrics, worker: Any, amqp: Any
) -> None:
    send_jobs(settings, WORKLOAD.jobs())
    expected = dict(WORKLOAD.expected(settings.max_attempts))
    wait_for(lambda: counts(metrics.registry) == expected, timeout_s=20)

    registry = metrics.registry
    assert total(registry, "worker_job_retries_by_category_total", category="timeout") == expected["retries"]
    assert (
        total(registry, "worker_jobs_failed_by_category_total", category="validation", reason="non_retryable")
        == WORKLOAD.permanent
    )
    assert (
        total(registry, "worker_jobs_failed_by_category_total", category="timeout", reason="exhausted")
        == WORKLOAD.down
    )


def test_duration_is_observed_per_attempt_by_provider_operation_and_outcome(
    settings: Settings, metrics: Metrics, worker: Any, amqp: Any
) -> None:
    send_jobs(settings, WORKLOAD.jobs())
    expected = dict(WORKLOAD.expected(settings.max_attempts))
    wait_for(lambda: counts(metrics.registry) == expected, timeout_s=20)

    def attempts(outcome: str) -> float:
        return total(
            metrics.registry,
            "worker_job_duration_seconds_count",
            provider=PROVIDER,
            operation="create",
            outcome=outcome,
        )

    assert attempts("succeeded") == expected["processed"]
    assert attempts("retried") == expected["retries"]
    assert attempts("dead_lettered") == expected["failed"]
    assert attempts("errored") == 0


def test_in_progress_counts_a_running_job_and_drops_to_zero_after(
    settings: Settings, metrics: Metrics, worker: Any, amqp: Any
) -> None:
    release = threading.Event()
    worker.registry.register(
        "Test.Metrics", "Blocker", FunctionProvider({"create": lambda job: release.wait(10)})
    )
    job = {"provider_namespace": "Test.Metrics", "resource_type": "Blocker", "operation": "create"}
    send_jobs(settings, [job])

    def in_progress() -> float:
        return total(metrics.registry, "worker_jobs_in_progress", worker_id="test-worker")

    try:
        wait_for(lambda: in_progress() == 1)
    finally:
        release.set()
    wait_for(lambda: counts(metrics.registry)["processed"] == 1)
    assert in_progress() == 0


def test_a_dead_letter_carried_over_from_an_earlier_life_is_not_counted_again(
    settings: Settings, metrics: Metrics, worker: Any, amqp: Any
) -> None:
    old_dead_letter = {"reason": "exhausted", "category": "timeout", "attempts": 3}
    send_jobs(settings, Workload(succeed=1, flaky=0, permanent=0, down=0).jobs(), dead_letter=old_dead_letter)

    wait_for(lambda: counts(metrics.registry)["processed"] == 1)

    assert counts(metrics.registry)["failed"] == 0


def test_promtool_accepts_the_exposition(
    settings: Settings, metrics: Metrics, worker: Any, amqp: Any
) -> None:
    promtool = require_tool("promtool", "apt-get install prometheus")
    send_jobs(settings, WORKLOAD.jobs())
    expected = dict(WORKLOAD.expected(settings.max_attempts))
    wait_for(lambda: counts(metrics.registry) == expected, timeout_s=20)
    body, content_type = render_metrics(metrics.registry)

    check = subprocess.run(
        [promtool, "check", "metrics"], check=False, input=body, capture_output=True, timeout=30
    )

    assert content_type.startswith("text/plain")
    assert b"worker_jobs_processed_total{" in body
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


# -- several processes: the dramatiq CLI in multiprocess mode ---------------------


@pytest.mark.fault
def test_two_worker_processes_report_one_set_of_counts(settings: Settings, tmp_path: Path, amqp: Any) -> None:
    workload = Workload(succeed=20, flaky=4, permanent=3, down=2)
    expected = dict(workload.expected(settings.max_attempts))

    run_cli_workload(settings, tmp_path / "metrics", workload, expected, processes=2)
    registry = metrics_registry(path=str(tmp_path / "metrics"))

    assert counts(registry) == expected
    assert queue_depth(amqp, xq_name(settings.queue_name)) == expected["failed"]
    workers = {
        sample.labels["worker_id"]
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "worker_jobs_processed_total"
    }
    assert len(workers) == 2, f"expected both processes to have worked, saw {workers}"
    assert total(registry, "worker_jobs_in_progress") == 0


@pytest.mark.fault
def test_counts_survive_a_worker_restart(settings: Settings, tmp_path: Path, amqp: Any) -> None:
    first = Workload(succeed=3, flaky=1, permanent=1, down=0)
    second = Workload(succeed=2, flaky=1, permanent=0, down=1)
    after_first = dict(first.expected(settings.max_attempts))
    both = {k: v + second.expected(settings.max_attempts)[k] for k, v in after_first.items()}

    run_cli_workload(settings, tmp_path / "metrics", first, after_first, processes=1)
    run_cli_workload(settings, tmp_path / "metrics", second, both, processes=1)
    registry = metrics_registry(path=str(tmp_path / "metrics"))

    assert counts(registry) == both
