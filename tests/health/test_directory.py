"""ProviderDirectory: providers and breakers folded from health events, on a clock the test moves."""

from __future__ import annotations

from provider_jobs.health import ProviderDirectory
from provider_jobs.health.cli import format_providers
from provider_jobs.middleware import BreakerState

KEY = "ITL.Core/ResourceGroup"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def announce(worker: str, at: float, *providers: str, breakers: list[dict] | None = None) -> dict:
    return {
        "type": "announce",
        "worker": worker,
        "at": at,
        "interval_s": 10.0,
        "providers": list(providers),
        "breakers": breakers or [],
    }


def test_a_provider_is_registered_while_a_worker_announces_it() -> None:
    clock = Clock()
    directory = ProviderDirectory(clock=clock)
    directory.fold(announce("w1", clock.now, KEY))
    directory.fold(announce("w2", clock.now - 5, KEY, "ITL.Core/Storage"))
    entry = directory.entry(KEY)
    assert (entry.registered, entry.healthy, dict(entry.workers)) == (True, True, {"w1": 1000.0, "w2": 995.0})
    clock.now += 31
    assert [e.key for e in directory.entries() if e.registered] == []
    assert not directory.entry(KEY).registered


def test_a_worker_that_stops_no_longer_serves_its_providers() -> None:
    clock = Clock()
    directory = ProviderDirectory(clock=clock)
    directory.fold(announce("w1", clock.now, KEY))
    directory.fold({"type": "stopping", "worker": "w1", "at": clock.now})
    assert not directory.entry(KEY).registered


def test_the_newest_breaker_state_wins_and_an_open_breaker_is_not_healthy() -> None:
    clock = Clock()
    directory = ProviderDirectory(clock=clock)
    opened = BreakerState(KEY, state="open", failures=5, next_probe_at=1005.0, updated_at=999.0)
    closed_before = BreakerState(KEY, state="closed", updated_at=998.0)
    directory.fold(announce("w1", clock.now, KEY, breakers=[opened.as_dict()]))
    directory.fold({"type": "breaker", "event": "closed", "state": closed_before.as_dict()})
    entry = directory.entry(KEY)
    assert (entry.state, entry.registered, entry.healthy) == ("open", True, False)
    assert entry.as_dict()["next_probe_at"] == 1005.0


def test_malformed_events_are_ignored() -> None:
    directory = ProviderDirectory()
    for event in (
        {"type": "announce", "worker": "w1", "at": "yesterday", "interval_s": 10, "providers": [KEY]},
        {"type": "breaker", "state": {"key": KEY, "state": "ajar"}},
        {"type": "breaker", "state": "open"},
        {"type": "announce", "worker": 7},
        {"type": "unheard-of"},
    ):
        directory.fold(event)
    assert directory.entries() == []


def test_the_providers_table_shows_state_failures_next_probe_and_workers() -> None:
    clock = Clock()
    directory = ProviderDirectory(clock=clock)
    opened = BreakerState(KEY, state="open", failures=5, next_probe_at=1003.5, updated_at=999.0)
    directory.fold(announce("worker-a", 998.0, KEY, breakers=[opened.as_dict()]))
    directory.fold(announce("worker-b", 990.0, "ITL.Core/Storage"))
    assert format_providers(directory.entries(), now=clock.now).splitlines() == [
        "PROVIDER                REGISTERED  STATE   FAILURES  NEXT PROBE  WORKERS (LAST SEEN)",
        "ITL.Core/ResourceGroup  yes         open    5         in 3.5 s    worker-a (2 s ago)",
        "ITL.Core/Storage        yes         closed  0         -           worker-b (10 s ago)",
    ]
    assert format_providers([], now=clock.now).startswith("No provider is registered")
