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
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

__all__ = ["SOLO_ATTRIBUTE", "SoloRuns"]

#: The attribute the consumer sets on the message proxy of a suspect.
SOLO_ATTRIBUTE = "_provider_jobs_solo"
#: The attribute set on a proxy while it holds the gate: ``"solo"`` or ``"shared"``.
_HOLDING = "_provider_jobs_gate"


class SoloRuns(Middleware):
    """The gate of one worker process: shared by ordinary jobs, taken alone by a suspect."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._running = 0
        self._solo_waiting = 0
        self._solo_running = False

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        solo = bool(message.__dict__.get(SOLO_ATTRIBUTE))
        with self._condition:
            if solo:
                self._solo_waiting += 1
                self._condition.wait_for(lambda: self._running == 0 and not self._solo_running)
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
