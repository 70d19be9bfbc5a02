"""ProviderBreakers: the state machine, on a clock the test moves."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from provider_jobs.middleware.breaker import CLOSED, HALF_OPEN, OPEN, BreakerState, ProviderBreakers

P = "ITL.Core/ResourceGroup"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def breakers(clock: Clock, events: list[tuple[str, str]]) -> ProviderBreakers:
    return ProviderBreakers(
        threshold=3,
        window_s=10,
        probe_interval_s=5,
        clock=clock,
        worker_id="w1",
        probe_spread=0,
        on_change=lambda state, event: events.append((state.key, event)),
    )


def test_consecutive_health_failures_within_the_window_open_the_breaker(breakers, events) -> None:
    assert not breakers.record_failure(P, "connection_error")
    assert not breakers.record_failure(P, "timeout")
    assert breakers.record_failure(P, "service_unavailable")
    assert breakers.state(P).state == OPEN
    assert events == [(P, "opened")]


def test_failures_older_than_the_window_do_not_count(breakers, clock) -> None:
    breakers.record_failure(P, "timeout")
    breakers.record_failure(P, "timeout")
    clock.now += 11
    assert not breakers.record_failure(P, "timeout")
    assert breakers.state(P).state == CLOSED


def test_an_answer_from_the_provider_resets_the_count(breakers) -> None:
    breakers.record_failure(P, "timeout")
    breakers.record_failure(P, "timeout")
    breakers.record_failure(P, "validation")
    assert not breakers.record_failure(P, "timeout")
    breakers.record_success(P)
    breakers.record_failure(P, "timeout")
    assert not breakers.record_failure(P, "timeout")


def test_provider_not_found_is_not_a_breaker_category(breakers) -> None:
    for _ in range(10):
        assert not breakers.record_failure(P, "provider_not_found")
    assert breakers.gate(P).admit


def test_an_open_breaker_admits_one_probe_per_interval(breakers, clock, events) -> None:
    for _ in range(3):
        breakers.record_failure(P, "timeout")
    gate = breakers.gate(P)
    assert not gate.admit and gate.reason == "open" and gate.wait_s == pytest.approx(5)
    clock.now += 5
    probe = breakers.gate(P)
    assert probe.admit and probe.probe
    assert breakers.state(P).state == HALF_OPEN
    second = breakers.gate(P)
    assert not second.admit and second.wait_s == pytest.approx(5)
    clock.now += 1
    assert breakers.record_failure(P, "timeout")
    assert breakers.state(P).state == OPEN
    assert breakers.wait_s(P) == pytest.approx(4)
    clock.now += 4
    assert breakers.gate(P).probe
    breakers.record_success(P)
    assert breakers.state(P).state == CLOSED
    assert breakers.gate(P).admit
    assert [e for _, e in events] == ["opened", "probe", "reopened", "probe", "closed"]


def test_retry_after_holds_every_job_for_the_provider(breakers, clock) -> None:
    breakers.record_failure(P, "busy", retry_after_s=30)
    gate = breakers.gate(P)
    assert not gate.admit and gate.reason == "retry_after" and gate.wait_s == pytest.approx(30)
    assert breakers.gate("Other/Type").admit
    clock.now += 30
    assert breakers.gate(P).admit


def test_another_process_newer_state_wins_and_probes_only_move_later(breakers, clock) -> None:
    remote = BreakerState(
        P, state=OPEN, failures=5, opened_at=clock.now, next_probe_at=clock.now + 5, updated_at=clock.now
    )
    assert breakers.apply(remote)
    assert not breakers.gate(P).admit
    assert not breakers.apply(remote)
    older = BreakerState(P, state=CLOSED, updated_at=clock.now - 1)
    assert not breakers.apply(older)
    assert breakers.state(P).state == OPEN
    closed = BreakerState(P, state=CLOSED, updated_at=clock.now + 1)
    assert breakers.apply(closed)
    assert breakers.gate(P).admit


def test_a_state_survives_its_json_form(breakers, clock) -> None:
    for _ in range(3):
        breakers.record_failure(P, "timeout", retry_after_s=2)
    state = breakers.state(P)
    assert BreakerState.from_dict(state.as_dict()) == state
    assert [h["event"] for h in state.history] == ["retry_after", "opened"]
    with pytest.raises(ValueError, match="not a breaker state"):
        BreakerState.from_dict({"key": P, "state": "ajar"})


def test_state_and_transitions_are_exported_as_metrics(clock) -> None:
    registry = CollectorRegistry()
    breakers = ProviderBreakers(
        threshold=1, probe_interval_s=5, probe_spread=0, clock=clock, registry=registry
    )
    breakers.record_failure(P, "timeout")
    assert registry.get_sample_value("provider_jobs_breaker_state", {"provider": P}) == 2
    clock.now += 5
    breakers.gate(P)
    breakers.record_success(P)
    assert registry.get_sample_value("provider_jobs_breaker_state", {"provider": P}) == 0
    labels = {"provider": P, "event": "opened"}
    assert registry.get_sample_value("provider_jobs_breaker_transitions_total", labels) == 1
