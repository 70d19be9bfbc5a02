"""ProviderBreakers: a circuit breaker per provider, fed by the error classifier.

A breaker is keyed by a function of the message (by default its ``provider``
option, ``namespace/resource_type``). It moves between three states:

- ``closed``: jobs run. Each call is recorded in a :class:`.FailureWindow`:
  a failure of a *health* category (the provider is unhealthy: not available,
  connection, timeout, service unavailable, busy) as the job's evidence
  against the provider, any other outcome (a success, a validation error: the
  provider answered) as evidence for it. The window opens the breaker when
  the last ``min_calls`` new jobs all failed, or when at least
  ``failure_rate`` of the jobs seen within ``window_s`` keep failing; either
  needs failures from ``min_jobs`` distinct jobs, so one job alone never opens
  it, however often it is retried.
- ``open``: jobs are not sent to the provider. They wait, without spending
  attempts, parked until the breaker closes or in the retry delay queues until
  the next probe (see :class:`.BreakerWait` and :mod:`.parking`).
  An opening on first attempts alone (every new job failed) is confirmed by
  the retries of the streak's first jobs, each let through once when it comes
  back: one success closes the breaker again (the failures were the jobs'
  own, as when every job fails its first call and succeeds on its second),
  failures leave it open until its probe round. Only the process that opened
  it knows those jobs.
- ``half_open``: every ``probe_interval_s`` a probe round begins: up to
  ``probe_jobs`` distinct waiting jobs are let through. The first success
  closes the breaker; when every probe of the round failed it opens again
  until the next round. A failed probe does not spend that job's attempts.

A provider's ``Retry-After`` applies to every job for it: until then the
breaker admits none, whatever its state.

The state is in-process. Another process's transitions are folded in with
:meth:`ProviderBreakers.apply`, and each of this process's transitions is
handed to ``on_change``: whatever shares them (our workers use a RabbitMQ
stream) is injected, so that this module depends on nothing but Dramatiq.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import dramatiq
from prometheus_client import CollectorRegistry, Counter, Gauge

from .breaker_state import (
    CLOSED,
    DEFAULT_BREAKER_CATEGORIES,
    HALF_OPEN,
    MAX_HISTORY,
    OPEN,
    STATE_VALUES,
    BreakerState,
    Gate,
    ProviderDown,
    job_of,
    provider_of,
)
from .breaker_window import Evidence, FailureWindow

__all__ = [
    "CLOSED",
    "DEFAULT_BREAKER_CATEGORIES",
    "HALF_OPEN",
    "OPEN",
    "BreakerState",
    "Gate",
    "ProviderBreakers",
    "ProviderDown",
    "job_of",
    "provider_of",
]

logger = logging.getLogger("provider_jobs.breaker")

#: The answer to a job whose provider takes jobs.
_ADMIT = Gate(True)


@dataclass(slots=True)
class _Breaker:
    state: BreakerState
    #: The evidence a closed breaker decides on.
    window: FailureWindow
    #: The jobs let through in the probe round this process began; ``None`` when it began none.
    round_jobs: set[str] | None = None
    #: Health failures of those jobs.
    round_failures: int = 0
    #: Jobs whose retry is let through at once to confirm an opening on first attempts alone.
    confirming: set[str] = field(default_factory=set)


class ProviderBreakers:
    """A circuit breaker per provider, thread-safe.

    Args:
        failure_rate: Share of the jobs that gave evidence within ``window_s`` which, failing,
            open a breaker; 0 < rate <= 1. Default 0.5.
        min_calls: First attempts failing in a row that open a breaker, and calls within
            ``window_s`` before the failure rate may open it. Default 20.
        min_jobs: Distinct failing jobs within ``window_s`` before a breaker may open; at least 2,
            so that one job's retries never open one. Default 3.
        window_s: The sliding window calls are counted in, in seconds. Default 60.
        probe_interval_s: Seconds between probe rounds of an open breaker. Default 5.
        probe_jobs: Distinct jobs a probe round lets through at most. Default 3.
        max_wait_s: Longest a job waits for an open breaker before it is dead-lettered as
            ``provider_down``, in seconds. Default 1800.
        categories: Category names that count as health failures.
            Default :data:`DEFAULT_BREAKER_CATEGORIES`.
        key: The breaker key of a message; ``None`` keeps it out of every breaker.
            Default :func:`provider_of`.
        worker_id: Recorded as ``updated_by``. Default ``""``.
        on_change: Called with the new state and the event (``opened``, ``probe``, ``reopened``,
            ``closed``, ``retry_after``) after each transition made here, outside the lock.
        probe_spread: Each process probes a breaker shared with others this fraction of
            ``probe_interval_s`` late at most, at a random offset of its own, so that the first to
            probe tells the others before their turn comes. Default 0.3; 0 probes on time.
        registry: Where ``provider_jobs_breaker_state`` and
            ``provider_jobs_breaker_transitions_total`` are registered; ``None`` (the default): none.
        clock: Epoch seconds. Default :func:`time.time`.
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.5,
        min_calls: int = 20,
        min_jobs: int = 3,
        window_s: float = 60.0,
        probe_interval_s: float = 5.0,
        probe_jobs: int = 3,
        max_wait_s: float = 1800.0,
        categories: Iterable[str] = DEFAULT_BREAKER_CATEGORIES,
        key: Callable[[dramatiq.MessageProxy], str | None] = provider_of,
        worker_id: str = "",
        on_change: Callable[[BreakerState, str], None] | None = None,
        probe_spread: float = 0.3,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < failure_rate <= 1:
            raise ValueError(f"failure_rate={failure_rate!r} is not allowed; use 0 < rate <= 1")
        if min_calls < 1:
            raise ValueError(f"min_calls={min_calls!r} is not allowed; use 1 or more")
        if min_jobs < 2:
            raise ValueError(f"min_jobs={min_jobs!r} is not allowed; use 2 or more (one job never opens one)")
        if probe_jobs < 1:
            raise ValueError(f"probe_jobs={probe_jobs!r} is not allowed; use 1 or more")
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.min_jobs = min_jobs
        self.window_s = window_s
        self.probe_interval_s = probe_interval_s
        self.probe_jobs = probe_jobs
        self.max_wait_s = max_wait_s
        self.categories = frozenset(categories)
        self.key = key
        self.worker_id = worker_id
        self.on_change = on_change
        self.clock = clock
        self._probe_offset_s = random.uniform(0.0, probe_spread * probe_interval_s)
        self._breakers: dict[str, _Breaker] = {}
        self._anonymous_calls = 0
        self._lock = threading.Lock()
        self._gauge: Gauge | None = None
        self._transitions: Counter | None = None
        if registry is not None:
            self._gauge = Gauge(
                "provider_jobs_breaker_state",
                "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
                ["provider"],
                registry=registry,
                multiprocess_mode="livemax",
            )
            self._transitions = Counter(
                "provider_jobs_breaker_transitions",
                "Circuit breaker transitions per provider, by event.",
                ["provider", "event"],
                registry=registry,
            )

    # -- reading ----------------------------------------------------------------

    def state(self, key: str) -> BreakerState:
        """``key``'s breaker; a closed one when none was made."""
        with self._lock:
            breaker = self._breakers.get(key)
            return breaker.state if breaker is not None else BreakerState(key)

    def states(self) -> list[BreakerState]:
        """Every breaker this process knows, sorted by key."""
        with self._lock:
            return [self._breakers[k].state for k in sorted(self._breakers)]

    def gate(self, key: str, *, job: str | None = None) -> Gate:
        """Whether ``job`` (a job id) may go to ``key`` now; a job let through an open breaker
        is one of its probes."""
        now = self.clock()
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                return _ADMIT
            current = breaker.state
            if now < current.retry_after_until:
                return Gate(False, wait_s=current.retry_after_until - now, reason="retry_after")
            if current.state == CLOSED:
                return _ADMIT
            if job is not None and job in breaker.confirming:
                # A retry of the streak that opened it: it tells whether those failures were the
                # provider's. One success closes the breaker; failures leave it open.
                breaker.confirming.discard(job)
                return Gate(True, probe=True)
            due = (current.next_probe_at or now) + self._probe_offset_s
            if now < due:
                round_jobs = breaker.round_jobs
                if (
                    current.state == HALF_OPEN
                    and round_jobs is not None
                    and len(round_jobs) < self.probe_jobs
                    and (job is None or job not in round_jobs)
                ):
                    round_jobs.add(job or f"#{len(round_jobs)}")
                    breaker.state = replace(current, probes=current.probes + 1)
                    return Gate(True, probe=True)
                return Gate(False, wait_s=due - now, reason="open")
            breaker.round_jobs = {job or "#0"}
            breaker.round_failures = 0
            state = self._change(
                breaker,
                now,
                "probe",
                state=HALF_OPEN,
                next_probe_at=now + self.probe_interval_s,
                probes=current.probes + 1,
            )
        self._changed(state, "probe")
        return Gate(True, probe=True)

    # -- outcomes -----------------------------------------------------------------

    def record_success(self, key: str, *, job: str | None = None) -> None:
        """``job`` (a job id) got an answer from ``key``: evidence that it is up; an open breaker closes."""
        now = self.clock()
        with self._lock:
            breaker = self._breaker(key)
            breaker.window.record(job or self._anonymous(), Evidence.ANSWERED, now, first_attempt=False)
            if breaker.state.state == CLOSED:
                return
            breaker.window.clear()
            breaker.round_jobs = None
            breaker.confirming.clear()
            state = self._change(
                breaker, now, "closed", state=CLOSED, failures=0, opened_at=None, next_probe_at=None, probes=0
            )
        self._changed(state, "closed")

    def record_failure(
        self,
        key: str,
        category: str,
        *,
        job: str | None = None,
        attempt: int = 1,
        last_attempt: bool = False,
        first_failed_at: float | None = None,
        retry_after_s: float | None = None,
    ) -> bool:
        """``job`` (a job id) failed with ``category`` on its ``attempt`` (1 for the first);
        returns whether ``key``'s breaker is now open.

        A failure of another category than the breaker's is an answer from the provider, as a
        success is. A first health failure of a job that will be retried is not yet evidence
        against the provider (see :class:`.FailureWindow`); a repeated one, or one on the job's
        ``last_attempt``, is, while the job's ``first_failed_at`` (epoch seconds; default now)
        is within the window. A ``retry_after_s`` holds every job for ``key`` until then.
        """
        if category not in self.categories:
            self.record_success(key, job=job)
            if retry_after_s:
                self.hold(key, retry_after_s)
            return False
        now = self.clock()
        job = job or self._anonymous()
        evidence: Evidence | None = Evidence.FAILING if attempt > 1 or last_attempt else Evidence.UNDECIDED
        if first_failed_at is not None and now - first_failed_at > self.window_s:
            evidence = None
        event = ""
        with self._lock:
            breaker = self._breaker(key)
            trip = breaker.window.record(job, evidence, now, first_attempt=attempt == 1)
            current = breaker.state
            if current.state == CLOSED and trip is not None:
                event = "opened"
                breaker.confirming = set(trip.undecided)
                state = self._change(
                    breaker,
                    now,
                    event,
                    state=OPEN,
                    failures=trip.failing,
                    opened_at=now,
                    next_probe_at=now + self.probe_interval_s,
                    probes=0,
                    last_category=category,
                    _evidence={"rule": trip.rule, "jobs": trip.jobs, "calls": trip.calls},
                )
            elif current.state == HALF_OPEN and breaker.round_jobs is not None and job in breaker.round_jobs:
                breaker.round_failures += 1
                if breaker.round_failures >= self.probe_jobs:
                    event = "reopened"
                    breaker.round_jobs = None
                    state = self._change(
                        breaker,
                        now,
                        event,
                        state=OPEN,
                        failures=breaker.round_failures,
                        next_probe_at=max(current.next_probe_at or now, now),
                        last_category=category,
                    )
            elif current.state == CLOSED:
                breaker.state = replace(current, failures=breaker.window.failing(), last_category=category)
            is_open = breaker.state.state != CLOSED
        if event:
            self._changed(state, event)
        if retry_after_s:
            self.hold(key, retry_after_s)
        return is_open

    def hold(self, key: str, retry_after_s: float) -> None:
        """Hold every job for ``key`` for ``retry_after_s`` seconds (the provider's ``Retry-After``)."""
        now = self.clock()
        until = now + retry_after_s
        with self._lock:
            breaker = self._breaker(key)
            if until <= breaker.state.retry_after_until:
                return
            state = self._change(breaker, now, "retry_after", retry_after_until=until)
        self._changed(state, "retry_after")

    def wait_s(self, key: str) -> float:
        """Seconds until ``key``'s breaker may let a job through (its next probe, its
        ``Retry-After``); 0 when it may now."""
        now = self.clock()
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                return 0.0
            current = breaker.state
            due = current.retry_after_until
            if current.state != CLOSED:
                due = max(due, (current.next_probe_at or now) + self._probe_offset_s)
            return max(0.0, due - now)

    def is_health_failure(self, category: str) -> bool:
        """Whether ``category`` counts against a breaker."""
        return category in self.categories

    # -- sharing ------------------------------------------------------------------

    def apply(self, remote: BreakerState) -> bool:
        """Fold in another process's state of a breaker; returns whether it changed ours.

        The newer change wins; ``next_probe_at`` and ``retry_after_until`` only move later,
        so that processes sharing a breaker send at most one probe per interval between them.
        """
        with self._lock:
            breaker = self._breaker(remote.key)
            local = breaker.state
            merged = local
            if remote.updated_at >= local.updated_at:
                merged = replace(remote)
                if remote.state == CLOSED:
                    breaker.window.clear()
                    breaker.confirming.clear()
                elif local.state != CLOSED and local.next_probe_at is not None:
                    merged = replace(
                        merged, next_probe_at=max(local.next_probe_at, remote.next_probe_at or 0)
                    )
            merged = replace(merged, retry_after_until=max(local.retry_after_until, remote.retry_after_until))
            if merged == local:
                return False
            if merged.state != local.state or merged.next_probe_at != local.next_probe_at:
                # Another process began a round, or ended ours: its probes are its own.
                breaker.round_jobs = None
            breaker.state = merged
        self._set_gauge(merged)
        if merged.state != local.state:
            logger.info(
                "Breaker for %s is %s (from %s)",
                merged.key,
                merged.state.replace("_", "-"),
                merged.updated_by,
            )
        return True

    # -- internals ----------------------------------------------------------------

    def _breaker(self, key: str) -> _Breaker:
        """``key``'s breaker, made closed when there is none; the caller holds the lock."""
        breaker = self._breakers.get(key)
        if breaker is None:
            window = FailureWindow(
                window_s=self.window_s,
                min_calls=self.min_calls,
                min_jobs=self.min_jobs,
                failure_rate=self.failure_rate,
            )
            breaker = self._breakers[key] = _Breaker(BreakerState(key), window)
        return breaker

    def _anonymous(self) -> str:
        """A job id of its own for a call recorded without one: each counts as a distinct job."""
        self._anonymous_calls += 1
        return f"#anonymous-{self._anonymous_calls}"

    def _change(self, breaker: _Breaker, now: float, event: str, **changes: Any) -> BreakerState:
        """Apply a transition made here; the caller holds the lock and calls :meth:`_changed` after."""
        previous = breaker.state
        entry: dict[str, Any] = {"at": round(now, 3), "event": event, "worker": self.worker_id}
        if event in ("opened", "reopened"):
            entry["failures"] = changes.get("failures", previous.failures)
            entry["category"] = changes.get("last_category", previous.last_category)
            entry.update(changes.pop("_evidence", {}))
        elif event == "retry_after":
            entry["until"] = round(changes["retry_after_until"], 3)
        breaker.state = replace(
            previous,
            updated_at=now,
            updated_by=self.worker_id,
            history=(*previous.history, entry)[-MAX_HISTORY:],
            **changes,
        )
        return breaker.state

    def _changed(self, state: BreakerState, event: str) -> None:
        self._set_gauge(state)
        if self._transitions is not None:
            self._transitions.labels(state.key, event).inc()
        self._log(state, event)
        if self.on_change is not None:
            try:
                self.on_change(state, event)
            except Exception:
                logger.exception("Breaker for %s: sharing the %s event failed", state.key, event)

    def _set_gauge(self, state: BreakerState) -> None:
        if self._gauge is not None:
            self._gauge.labels(state.key).set(STATE_VALUES[state.state])

    def _log(self, state: BreakerState, event: str) -> None:
        extra = {"provider": state.key, "breaker_event": event}
        if event == "opened":
            evidence = state.history[-1] if state.history else {}
            if evidence.get("rule") == "every_new_job_failed":
                why = f"its last {evidence['calls']} new jobs all failed"
            else:
                why = (
                    f"{state.failures} of {evidence.get('jobs', '?')} jobs keep failing "
                    f"within {self.window_s:g} s ({evidence.get('calls', '?')} calls)"
                )
            logger.warning(
                "Breaker for %s opened: %s (%s); its jobs wait, next probe in %s s",
                state.key,
                why,
                state.last_category,
                f"{self.probe_interval_s:g}",
                extra=extra,
            )
        elif event == "probe":
            logger.info(
                "Breaker for %s: a probe round lets up to %d waiting job(s) through (%d probe(s) so far)",
                state.key,
                self.probe_jobs,
                state.probes,
                extra=extra,
            )
        elif event == "reopened":
            logger.warning(
                "Breaker for %s: the %d probe(s) of its round failed (%s); next round in %s s",
                state.key,
                state.failures,
                state.last_category,
                f"{max(0.0, (state.next_probe_at or 0) - state.updated_at):.3g}",
                extra=extra,
            )
        elif event == "closed":
            opened = next((h["at"] for h in reversed(state.history) if h["event"] == "opened"), None)
            logger.info(
                "Breaker for %s closed%s; its jobs go again",
                state.key,
                f" after {state.updated_at - opened:.1f} s open" if opened is not None else "",
                extra=extra,
            )
        elif event == "retry_after":
            logger.info(
                "Provider %s asked to wait %.3g s (Retry-After); every job for it waits",
                state.key,
                state.retry_after_until - state.updated_at,
                extra=extra,
            )
