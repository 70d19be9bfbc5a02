"""SoloRuns: a job suspected of killing its worker process runs alone in its process.

When a worker process dies, every job it was running comes back, and so does
every job it had only prefetched. Which one killed it cannot be told from the
redelivery. So a suspect (see :class:`.WorkerConsumer`) runs *alone*: one
suspect at a time per process, after the jobs already running there have
finished, and no other job starts until it has. If the process dies then, the
suspect did it, and only then is a crash counted against it.

This middleware is the process-wide gate: ordinary jobs share it, a suspect
takes it alone (a readers-writer lock that prefers the suspect, so that a busy
process cannot starve it). The consumer holds one suspect per process at most
(they come on a channel of their own with a prefetch of 1), so a suspect never
waits in a process where another one runs.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

__all__ = ["SOLO_ATTRIBUTE", "SoloRuns"]

#: The attribute the consumer sets on the message proxy of a suspect.
SOLO_ATTRIBUTE = "_provider_jobs_solo"
#: The attribute set on a proxy while it holds the gate: ``"solo"`` or ``"shared"``.
_HOLDING = "_provider_jobs_gate"
#: How often a waiting suspect looks again whether the consumers have settled what they sent, in s.
_QUIET_POLL_S = 0.01


class SoloRuns(Middleware):
    """The gate of one worker process: shared by ordinary jobs, taken alone by a suspect."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._running = 0
        self._solo_waiting = 0
        self._solo_running = False
        #: Consumers' "nothing of mine is in flight" predicates (see :meth:`watch`), held weakly.
        self._quiet: list[weakref.WeakMethod[Callable[[], bool]]] = []

    @property
    def busy(self) -> bool:
        """Whether a suspect waits or runs: a consumer then sends nothing whose ack the suspect's
        crash could lose (a copy of a redelivery, say), lest the copy and its original both live."""
        with self._condition:
            return self._solo_running or self._solo_waiting > 0

    def watch(self, quiet: Callable[[], bool]) -> None:
        """A suspect starts only once ``quiet()`` holds (a bound method: no ack or copy of its
        consumer's in flight); a consumer that is gone is forgotten."""
        with self._condition:
            self._quiet = [ref for ref in self._quiet if ref() is not None]
            self._quiet.append(weakref.WeakMethod(quiet))

    def _all_quiet(self) -> bool:
        return all(quiet is None or quiet() for quiet in (ref() for ref in list(self._quiet)))

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        solo = bool(message.__dict__.get(SOLO_ATTRIBUTE))
        with self._condition:
            if solo:
                self._solo_waiting += 1
                # Polled: the consumers' settlements do not notify this condition.
                while not (self._running == 0 and not self._solo_running and self._all_quiet()):
                    self._condition.wait(_QUIET_POLL_S)
                self._solo_waiting -= 1
                self._solo_running = True
            else:
                self._condition.wait_for(lambda: not self._solo_running and not self._solo_waiting)
                self._running += 1
        message.__dict__[_HOLDING] = "solo" if solo else "shared"

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._release(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._release(message)

    def _release(self, message: dramatiq.MessageProxy) -> None:
        holding = message.__dict__.pop(_HOLDING, None)
        if holding is None:
            return
        with self._condition:
            if holding == "solo":
                self._solo_running = False
            else:
                self._running -= 1
            self._condition.notify_all()
