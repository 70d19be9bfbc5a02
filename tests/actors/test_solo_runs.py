"""SoloRuns: a suspect runs alone in its process; ordinary jobs share the process."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from provider_jobs.actors.solo_runs import SOLO_ATTRIBUTE, SoloRuns

from support import wait_for


def message(*, solo: bool = False) -> Any:
    proxy = SimpleNamespace()
    if solo:
        proxy.__dict__[SOLO_ATTRIBUTE] = True
    return proxy


def start(gate: SoloRuns, proxy: Any, started: list[Any]) -> threading.Thread:
    def run() -> None:
        gate.before_process_message(None, proxy)  # type: ignore[arg-type]
        started.append(proxy)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_ordinary_jobs_run_side_by_side() -> None:
    gate, started = SoloRuns(), []
    first, second = message(), message()
    start(gate, first, started)
    start(gate, second, started)
    wait_for(lambda: len(started) == 2)


def test_a_suspect_waits_for_the_running_jobs_and_runs_alone() -> None:
    gate, started = SoloRuns(), []
    running, suspect, later = message(), message(solo=True), message()
    start(gate, running, started)
    wait_for(lambda: started == [running])
    waiting = start(gate, suspect, started)
    wait_for(lambda: gate._solo_waiting == 1)
    # A job that comes while the suspect waits does not start before it.
    blocked = start(gate, later, started)
    assert started == [running]
    gate.after_process_message(None, running)  # type: ignore[arg-type]
    wait_for(lambda: started == [running, suspect])
    waiting.join(1)
    assert blocked.is_alive() and started == [running, suspect]
    gate.after_skip_message(None, suspect)  # type: ignore[arg-type]
    wait_for(lambda: started == [running, suspect, later])


def test_releasing_a_message_twice_or_one_never_admitted_changes_nothing() -> None:
    gate, started = SoloRuns(), []
    stray = message()
    gate.after_process_message(None, stray)  # type: ignore[arg-type]
    suspect = message(solo=True)
    start(gate, suspect, started)
    wait_for(lambda: started == [suspect])
    gate.after_process_message(None, suspect)  # type: ignore[arg-type]
    gate.after_process_message(None, suspect)  # type: ignore[arg-type]
    other = message(solo=True)
    start(gate, other, started)
    wait_for(lambda: started == [suspect, other])
