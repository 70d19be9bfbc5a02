"""ReplayRuns: paced replays started from the console, running in the background, and their progress."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable

from ..dlq import ReplayOutcome
from ..dlq.replay.gate import PauseHandler
from ..errors import ProviderJobsError
from ..health.watch import Pause

__all__ = ["ReplayRun", "ReplayRuns"]

logger = logging.getLogger("provider_jobs.console")

#: Finished runs remembered for their pages, the oldest forgotten first.
_KEPT = 100


@dataclasses.dataclass
class ReplayRun:
    """One paced replay: how far it got."""

    id: int
    total: int
    rate_per_s: float
    published: int = 0
    skipped: int = 0
    failed: int = 0
    done: bool = False
    error: str | None = None
    #: The operation stored in the archive for this replay, which outlives this process.
    operation_id: int | None = None
    #: Providers whose records wait for their breaker now, each with its line
    #: (``ITL.Core/ResourceGroup down since 12:03``).
    paused: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def settled(self) -> int:
        """Records with an outcome so far."""
        return self.published + self.skipped + self.failed


class ReplayRuns:
    """Runs replays in threads of their own, so that a paced replay of thousands outlives its request."""

    def __init__(self, *, describe_error: Callable[[Exception], str] = str) -> None:
        self._runs: dict[int, ReplayRun] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._describe_error = describe_error

    def start(
        self,
        replay: Callable[[Callable[[ReplayOutcome], None], PauseHandler], object],
        *,
        total: int,
        rate_per_s: float,
        operation_id: int | None = None,
    ) -> ReplayRun:
        """Start ``replay(on_outcome, on_pause)`` in a thread; its run counts each outcome and
        shows the providers paused."""
        with self._lock:
            run = ReplayRun(id=next(self._ids), total=total, rate_per_s=rate_per_s, operation_id=operation_id)
            self._runs[run.id] = run
            for old in sorted(self._runs)[:-_KEPT]:
                if self._runs[old].done:
                    del self._runs[old]

        def count(outcome: ReplayOutcome) -> None:
            with self._lock:
                if outcome.status == "published":
                    run.published += 1
                elif outcome.status == "failed":
                    run.failed += 1
                else:
                    run.skipped += 1

        def show(provider: str, pause: Pause | None) -> None:
            with self._lock:
                if pause is None:
                    run.paused.pop(provider, None)
                else:
                    run.paused[provider] = pause.describe()

        def work() -> None:
            try:
                replay(count, show)
            except ProviderJobsError as exc:
                run.error = self._describe_error(exc)
            except Exception as exc:  # a thread's failure must reach the page, not vanish
                logger.exception("Console replay %d failed", run.id)
                run.error = self._describe_error(exc)
            finally:
                run.paused.clear()
                run.done = True

        threading.Thread(target=work, name=f"console-replay-{run.id}", daemon=True).start()
        return run

    def get(self, run_id: int) -> ReplayRun | None:
        """The run ``run_id``, if remembered."""
        with self._lock:
            return self._runs.get(run_id)
