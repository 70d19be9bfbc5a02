"""FailureWindow: the evidence a provider's circuit breaker decides on, and the rule that
decides.

A breaker must open when the *provider* fails, not when a few *jobs* fail for
reasons of their own. Five failures in a row, counted across jobs, cannot tell
the two apart: when a tenth of the jobs fail three times each, they are common
on a healthy provider. The window opens a breaker on either of two kinds of
evidence, each needing health failures from at least ``min_jobs`` distinct
jobs, so that one job's own retries never open one:

- **Every new job fails.** The last ``min_calls`` first attempts failed, with
  no answer from the provider between them. This is how an outage shows
  first. Retries are left out of it: at the end of a batch only the jobs that
  always fail are still retried, and their failures in a row say nothing new.
  On a healthy provider it is rare: with 40 % of first attempts failing (a
  tenth of the jobs always, another third once), 20 in a row come about once
  in 10^8 calls.
- **Most jobs keep failing.** Within the last ``window_s`` seconds, at least
  ``min_calls`` calls were made and at least ``failure_rate`` of the jobs that
  voted are failing, as resilience4j's and Polly's rate-based breakers decide,
  with one vote per job (its latest evidence): a job retried ten times is one
  failing job. A first failure before a retry is not yet a vote: the retry
  tells whether it was the job's failure (it succeeds) or the provider's (it
  fails again), so jobs that succeed on their second try never count against
  the provider. And a job votes only while its first failure is recent (within
  ``window_s``): a job still retried minutes later speaks about itself, not
  about the provider now.

Memory is bounded: at most :data:`MAX_JOBS` jobs are kept (the oldest leave
first), calls are counted per second, and a failure streak keeps at most
``min_jobs`` job ids.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

__all__ = ["MAX_JOBS", "Evidence", "FailureWindow", "Trip"]

#: Jobs a window keeps at most; past it, the oldest leave first, so that the
#: window is the last ``MAX_JOBS`` jobs on a provider busier than that.
MAX_JOBS = 10_000


class Evidence(Enum):
    """What a job's latest call says about its provider."""

    #: The provider answered: a success, or a failure of another category (validation, ...).
    ANSWERED = "answered"
    #: A first health failure of a job that will be retried: not yet a vote.
    UNDECIDED = "undecided"
    #: A repeated health failure, or one on the job's last attempt.
    FAILING = "failing"


@dataclass(frozen=True, slots=True)
class Trip:
    """Why a window says its breaker should open.

    Args:
        rule: ``every_new_job_failed`` or ``failure_rate``.
        failing: Failing jobs: distinct jobs in the streak, or jobs voting failing.
        jobs: Jobs that gave evidence (the streak's calls for ``every_call_failed``).
        calls: Calls the rule looked at.
        undecided: The streak's first jobs (``every_new_job_failed``): first failures, not yet votes.
    """

    rule: str
    failing: int
    jobs: int
    calls: int
    #: For ``every_new_job_failed``: the first jobs of the streak, whose retries tell whether the
    #: failures were the provider's (they fail again) or the jobs' own (they succeed).
    undecided: frozenset[str] = frozenset()


class FailureWindow:
    """Each job's latest evidence within the last ``window_s`` seconds, and the current streak
    of health failures; not thread-safe (:class:`.ProviderBreakers` holds its lock around it).

    Args:
        window_s: How long a call counts, in seconds.
        min_calls: First attempts failing in a row that open; calls in the window before the rate may.
        min_jobs: Distinct failing jobs either rule needs (2 or more).
        failure_rate: Share of the voting jobs failing that opens (0 < rate <= 1).
    """

    def __init__(self, *, window_s: float, min_calls: int, min_jobs: int, failure_rate: float) -> None:
        self.window_s = window_s
        self.min_calls = min_calls
        self.min_jobs = min_jobs
        self.failure_rate = failure_rate
        # job -> (when, evidence), oldest first.
        self._jobs: OrderedDict[str, tuple[float, Evidence]] = OrderedDict()
        self._counts = dict.fromkeys(Evidence, 0)
        # [whole second, calls in it], oldest first.
        self._calls: deque[list[int]] = deque()
        self._call_count = 0
        self._streak = 0
        self._streak_jobs: set[str] = set()

    def record(self, job: str, evidence: Evidence | None, now: float, *, first_attempt: bool) -> Trip | None:
        """Record a call of ``job`` at ``now`` (epoch seconds); returns why the breaker should
        open, or ``None``.

        Args:
            job: The job's id, the same for all its attempts.
            evidence: Its vote; ``None`` for a call that counts but does not vote (a stale job's).
            now: When, in epoch seconds.
            first_attempt: The job's first attempt: its failure extends the streak.
        """
        self._expire(now)
        second = int(now)
        if self._calls and self._calls[-1][0] == second:
            self._calls[-1][1] += 1
        else:
            self._calls.append([second, 1])
        self._call_count += 1
        if evidence is None:
            return None
        previous = self._jobs.pop(job, None)
        if previous is not None:
            self._counts[previous[1]] -= 1
        elif len(self._jobs) >= MAX_JOBS:
            _, (_, oldest) = self._jobs.popitem(last=False)
            self._counts[oldest] -= 1
        self._jobs[job] = (now, evidence)
        self._counts[evidence] += 1
        if evidence is Evidence.ANSWERED:
            self._streak = 0
            self._streak_jobs.clear()
            return None
        if first_attempt:
            self._streak += 1
            if len(self._streak_jobs) < self.min_jobs:
                self._streak_jobs.add(job)
            if self._streak >= self.min_calls and len(self._streak_jobs) >= self.min_jobs:
                return Trip(
                    "every_new_job_failed",
                    len(self._streak_jobs),
                    self._streak,
                    self._streak,
                    frozenset(self._streak_jobs),
                )
        failing, answered = self._counts[Evidence.FAILING], self._counts[Evidence.ANSWERED]
        if (
            self._call_count >= self.min_calls
            and failing >= self.min_jobs
            and failing >= self.failure_rate * (failing + answered)
        ):
            return Trip("failure_rate", failing, failing + answered, self._call_count)
        return None

    def failing(self) -> int:
        """Jobs voting failing, as last recorded."""
        return self._counts[Evidence.FAILING]

    def clear(self) -> None:
        """Forget every call: a breaker that closes starts from fresh evidence."""
        self._jobs.clear()
        self._calls.clear()
        self._call_count = 0
        self._counts = dict.fromkeys(Evidence, 0)
        self._streak = 0
        self._streak_jobs.clear()

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._jobs:
            job, (at, evidence) = next(iter(self._jobs.items()))
            if at >= horizon:
                break
            del self._jobs[job]
            self._counts[evidence] -= 1
        while self._calls and self._calls[0][0] + 1 <= horizon:
            self._call_count -= self._calls.popleft()[1]
