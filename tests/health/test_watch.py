"""BreakerWatch: which providers a replay holds back, folded from health events on a clock the
test moves."""

from __future__ import annotations

import threading
import time
from typing import Any

from test_directory import Clock

from provider_jobs.health import BreakerWatch, Pause
from provider_jobs.health.watch import RETRY_AFTER

KEY = "ITL.Core/ResourceGroup"


def announce(at: float, *, breakers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": "announce",
        "worker": "w1",
        "at": at,
        "interval_s": 10.0,
        "providers": [KEY],
        "breakers": breakers or [],
    }


def breaker(state: str, at: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": "breaker",
        "event": state,
        "state": {"key": KEY, "state": state, "updated_at": at, **fields},
    }


def test_a_provider_whose_breaker_is_open_is_paused_since_it_opened() -> None:
    clock = Clock()
    watch = BreakerWatch(clock=clock)
    watch.fold(announce(clock.now))
    assert watch.pause_of(KEY) is None
    watch.fold(breaker("open", clock.now, opened_at=990.0))
    assert watch.pause_of(KEY) == Pause(KEY, 990.0)
    watch.fold(breaker("half_open", clock.now + 1, opened_at=990.0))
    assert watch.pause_of(KEY) == Pause(KEY, 990.0)
    watch.fold(breaker("closed", clock.now + 2))
    assert watch.pause_of(KEY) is None


def test_a_pending_retry_after_pauses_the_provider_until_it_ends() -> None:
    clock = Clock()
    watch = BreakerWatch(clock=clock)
    watch.fold(
        announce(clock.now, breakers=[{"key": KEY, "retry_after_until": 1_030.0, "updated_at": 999.0}])
    )
    pause = watch.pause_of(KEY)
    assert pause == Pause(KEY, 999.0, RETRY_AFTER, 1_030.0)
    assert pause is not None and "asked to wait (Retry-After) until " in pause.describe()
    clock.now = 1_030.0
    assert watch.pause_of(KEY) is None


def test_a_breaker_no_live_worker_announces_holds_nothing_back() -> None:
    clock = Clock()
    watch = BreakerWatch(clock=clock)
    watch.fold(announce(clock.now))
    watch.fold(breaker("open", clock.now, opened_at=clock.now))
    clock.now += 31  # three announcement periods without one: no worker would ever close it
    assert watch.pause_of(KEY) is None


def test_a_health_event_wakes_whoever_waits() -> None:
    watch = BreakerWatch()
    threading.Timer(0.05, watch.fold, args=(announce(time.time()),)).start()
    started = time.monotonic()
    watch.wait(10)
    assert time.monotonic() - started < 5
