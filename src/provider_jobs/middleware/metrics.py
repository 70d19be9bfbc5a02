"""Metrics: Prometheus counters of what a worker did with each message.

The outcome of a message is read from what the retry middleware decided, so
:class:`Metrics` must come *before* ``ClassifiedRetries`` (or Dramatiq's
``Retries``) in the broker's middleware list: ``emit_after`` runs hooks in
reverse order, so the retry middleware has decided by the time
:meth:`Metrics.after_process_message` runs. Each attempt ends in one outcome:

- ``succeeded``: no exception;
- ``dead_lettered``: ``options["dead_letter"]`` was set during this attempt,
  or the message was failed (nacked into ``<queue>.XQ``);
- ``retried``: ``options["retries"]`` grew during this attempt: counted once,
  where Dramatiq's own Prometheus middleware counts a retry twice;
- ``breaker_wait``: the attempt failed while its provider's circuit breaker
  was open; the job waits for the next probe, its attempt not counted;
- ``errored``: an exception that no retry middleware handled.

Several worker processes (the ``dramatiq`` CLI) share counts through
prometheus-client's multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory before the processes start, and expose
:func:`metrics_registry` from any one of them (``http_port``) or from a
process beside them (see :mod:`.prometheus_multiprocess`, whose helpers are
re-exported here). Counters of a process that exits stay in the directory, so
totals survive a worker restart; the in-progress gauge of a dead process is
dropped.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import start_http_server

from .. import identity
from .prometheus_multiprocess import metrics_registry, multiprocess_dir, reap_dead_processes, render_metrics

__all__ = [
    "DURATION_BUCKETS_S",
    "Metrics",
    "metrics_registry",
    "multiprocess_dir",
    "render_metrics",
]

#: Buckets of the job duration histogram, in seconds: provider calls take
#: milliseconds to minutes.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: Category label when the retry middleware recorded none.
_UNCLASSIFIED = "unclassified"

logger = logging.getLogger("provider_jobs.metrics")


class _Attempt:
    """What ``before_process_message`` saw, for the same thread's after-hook."""

    __slots__ = ("breaker_waits", "dead_letter", "message_id", "retries", "started")

    def __init__(self, message: dramatiq.MessageProxy) -> None:
        options = message.options
        self.message_id = message.message_id
        self.started = time.perf_counter()
        self.retries: int = options.get("retries", 0)
        self.dead_letter: Any = options.get("dead_letter")
        self.breaker_waits: Any = options.get("breaker_waits", 0)


class Metrics(Middleware):
    """Counts processed, retried and dead-lettered messages for Prometheus.

    Exposed (``worker_id`` on every series)::

        worker_jobs_processed_total                     succeeded attempts
        worker_jobs_failed_total                        dead-lettered messages
        worker_job_retries_total                        retry attempts scheduled
        worker_job_retries_by_category_total{category}
        worker_jobs_failed_by_category_total{category,reason}
        worker_job_duration_seconds{provider,operation,outcome}   histogram
        worker_jobs_in_progress                         gauge
        worker_retries_held                             gauge: retries a worker holds, unacked

    ``provider`` and ``operation`` are message options; a message without
    them is labelled ``provider=""`` and its actor name as ``operation``.

    Args:
        worker_id: The ``worker_id`` label. Defaults to ``host-pid``, as
            ``ClassifiedRetries``.
        registry: Where the metrics are registered in single-process mode.
            Defaults to a registry of this middleware's own (``self.registry``),
            so that several brokers in one process do not clash.
        http_port: Serve ``/metrics`` on this port from the worker (in
            multiprocess mode from the first process that binds it). Default
            ``None``: not served.
        http_host: Address to bind ``http_port`` on. Default ``0.0.0.0``.
    """

    def __init__(
        self,
        *,
        worker_id: str | None = None,
        registry: CollectorRegistry | None = None,
        http_port: int | None = None,
        http_host: str = "0.0.0.0",  # noqa: S104 - a metrics port is scraped from outside the pod
    ) -> None:
        self.worker_id = identity.worker_id(worker_id)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_port = http_port
        self.http_host = http_host
        self._local = threading.local()
        self._server: Any = None
        self._running = 0
        self._running_lock = threading.Lock()
        labels = ["worker_id"]
        self.processed = Counter(
            "worker_jobs_processed", "Attempts that succeeded.", labels, registry=self.registry
        )
        self.failed = Counter(
            "worker_jobs_failed", "Messages dead-lettered (moved to the XQ).", labels, registry=self.registry
        )
        self.retries = Counter(
            "worker_job_retries",
            "Retry attempts scheduled, one per failed attempt that is retried.",
            labels,
            registry=self.registry,
        )
        self.retries_by_category = Counter(
            "worker_job_retries_by_category",
            "Retry attempts scheduled, by error category.",
            [*labels, "category"],
            registry=self.registry,
        )
        self.failed_by_category = Counter(
            "worker_jobs_failed_by_category",
            "Messages dead-lettered, by error category and reason.",
            [*labels, "category", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "worker_job_duration_seconds",
            "Time an attempt took, by provider, operation and outcome.",
            ["provider", "operation", "outcome"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "worker_jobs_in_progress",
            "Messages being processed now.",
            labels,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.retries_held = Gauge(
            "worker_retries_held",
            "Retries held by the worker until due (unacked, so a queue's message count leaves them out).",
            labels,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        #: Held retries per consumer of this process (each consumer reports its own count).
        self._held: dict[int, int] = {}
        self._durations: dict[tuple[str, str, str], Any] = {}

    # Label children, resolved once (a labels() lookup per message is measurable) and on
    # first use, not in __init__: in multiprocess mode a child creates this pid's files,
    # and a process that only imports the middleware (the API) must not export a worker.

    @functools.cached_property
    def _processed(self) -> Any:
        return self.processed.labels(self.worker_id)

    @functools.cached_property
    def _failed(self) -> Any:
        return self.failed.labels(self.worker_id)

    @functools.cached_property
    def _retries(self) -> Any:
        return self.retries.labels(self.worker_id)

    @functools.cached_property
    def _in_progress(self) -> Any:
        return self.in_progress.labels(self.worker_id)

    # -- worker lifecycle -------------------------------------------------------

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        path = multiprocess_dir()
        if path is not None:
            reap_dead_processes(path)
        # A restarted process may reuse a dead one's pid, and with it a stale value.
        self._set_in_progress(0)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.http_port is None or self._server is not None:
            return
        try:
            self._server, _ = start_http_server(
                self.http_port, addr=self.http_host, registry=metrics_registry(self.registry)
            )
        except OSError as exc:
            if multiprocess_dir() is not None:
                # Another process of this worker serves the shared directory.
                logger.debug("Metrics port %d is taken (%s); another process serves it", self.http_port, exc)
            else:
                logger.warning("Cannot serve metrics on port %d: %s", self.http_port, exc)
            return
        logger.info("Serving metrics on http://%s:%d/metrics", self.http_host, self.http_port)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        path = multiprocess_dir()
        if path is not None:
            multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]

    # -- messages ----------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._local.attempt = _Attempt(message)
        self._set_in_progress(+1)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = self._finish(message)
        options = message.options
        retries_before = attempt.retries if attempt is not None else options.get("retries", 0)
        dead_letter = options.get("dead_letter")
        # A replayed message may still carry an older dead letter: only a new one counts.
        new_dead_letter = dead_letter is not None and (
            attempt is None or dead_letter is not attempt.dead_letter
        )
        if message.failed or new_dead_letter:
            outcome = "dead_lettered"
            info = dead_letter if isinstance(dead_letter, dict) else {}
            category = str(info.get("category") or _UNCLASSIFIED)
            reason = str(info.get("reason") or "failed")
            self._failed.inc()
            self.failed_by_category.labels(self.worker_id, category, reason).inc()
        elif exception is None:
            outcome = "succeeded"
            self._processed.inc()
        elif options.get("retries", 0) > retries_before:
            outcome = "retried"
            self._retries.inc()
            self.retries_by_category.labels(self.worker_id, self._last_category(message)).inc()
        elif attempt is not None and options.get("breaker_waits", 0) != attempt.breaker_waits:
            # The attempt failed with its provider's breaker open: the job waits for the next probe.
            outcome = "breaker_wait"
        else:
            outcome = "errored"
        if attempt is not None:
            key = (
                str(options.get("provider") or ""),
                str(options.get("operation") or message.actor_name),
                outcome,
            )
            child = self._durations.get(key)
            if child is None:
                child = self._durations[key] = self.duration.labels(*key)
            child.observe(time.perf_counter() - attempt.started)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        attempt = self._finish(message)
        dead_letter = message.options.get("dead_letter")
        if isinstance(dead_letter, dict) and attempt is not None and dead_letter is not attempt.dead_letter:
            # Skipped and dead-lettered by the retry middleware (a job that waited too long
            # for its provider's circuit breaker: provider_down).
            self._failed.inc()
            self.failed_by_category.labels(
                self.worker_id,
                str(dead_letter.get("category") or _UNCLASSIFIED),
                str(dead_letter.get("reason") or "failed"),
            ).inc()
        elif message.failed:
            # AgeLimit and friends fail a skipped message: RabbitMQ dead-letters it.
            self._failed.inc()
            self.failed_by_category.labels(self.worker_id, "skipped", "skipped").inc()

    def _finish(self, message: dramatiq.MessageProxy) -> _Attempt | None:
        """The attempt this thread started for ``message``, if its before-hook ran."""
        attempt: _Attempt | None = getattr(self._local, "attempt", None)
        if attempt is None or attempt.message_id != message.message_id:
            return None
        self._local.attempt = None
        self._set_in_progress(-1)
        return attempt

    def set_retries_held(self, holder: object, count: int) -> None:
        """Record that ``holder`` (a consumer of this process) now holds ``count`` retries."""
        with self._running_lock:
            if count:
                self._held[id(holder)] = count
            else:
                self._held.pop(id(holder), None)
            total = sum(self._held.values())
        self.retries_held.labels(self.worker_id).set(total)

    def _set_in_progress(self, change: int) -> None:
        """Set (never add to) the gauge, so that a stale value from an earlier life is overwritten."""
        with self._running_lock:
            self._running = self._running + change if change else 0
            self._in_progress.set(self._running)

    @staticmethod
    def _last_category(message: dramatiq.MessageProxy) -> str:
        history = message.options.get("attempt_history")
        if isinstance(history, list) and history and isinstance(history[-1], dict):
            return str(history[-1].get("category") or _UNCLASSIFIED)
        return _UNCLASSIFIED
