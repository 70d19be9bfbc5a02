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
    """Small numbers for reading: 4 failures in a row open, from 2 jobs at least."""
    return ProviderBreakers(
        min_calls=4,
        min_jobs=2,
        window_s=10,
        probe_interval_s=5,
        clock=clock,
        worker_id="w1",
        probe_spread=0,
        on_change=lambda state, event: events.append((state.key, event)),
    )


def fail_jobs(breakers: ProviderBreakers, count: int, category: str = "timeout", *, first: int = 0) -> bool:
    """Fresh jobs ``job-<first>``... each fail once; returns whether the breaker is open."""
    is_open = False
    for n in range(first, first + count):
        is_open = breakers.record_failure(P, category, job=f"job-{n}")
    return is_open


def test_new_jobs_failing_in_a_row_open_the_breaker(breakers, events) -> None:
    assert not breakers.record_failure(P, "connection_error", job="a")
    assert not breakers.record_failure(P, "timeout", job="b")
    assert not breakers.record_failure(P, "service_unavailable", job="c")
    assert breakers.record_failure(P, "timeout", job="d")
    assert breakers.state(P).state == OPEN
    assert events == [(P, "opened")]
    assert breakers.state(P).history[-1]["rule"] == "every_new_job_failed"


def test_one_jobs_own_retries_never_open_the_breaker(clock) -> None:
    """The document's aggressive configuration: one job, ten attempts, the provider timing out."""
    breakers = ProviderBreakers(clock=clock)
    for attempt in range(1, 11):
        clock.now += 1
        assert not breakers.record_failure(
            P, "timeout", job="only", attempt=attempt, last_attempt=attempt == 10
        )
    assert breakers.state(P).state == CLOSED
    assert breakers.gate(P, job="only").admit


def test_two_jobs_retried_many_times_do_not_open_a_breaker_that_needs_three(clock) -> None:
    breakers = ProviderBreakers(clock=clock)
    for attempt in range(1, 51):
        for job in ("a", "b"):
            assert not breakers.record_failure(P, "timeout", job=job, attempt=attempt)
    assert breakers.state(P).state == CLOSED


def test_failures_older_than_the_window_do_not_count_toward_the_rate(breakers, clock) -> None:
    for n in range(3):
        breakers.record_failure(P, "timeout", job=f"bad-{n}", attempt=2)
        breakers.record_success(P, job=f"good-{n}")
    clock.now += 11
    for n in range(3):
        breakers.record_success(P, job=f"good-late-{n}")
    assert not breakers.record_failure(P, "timeout", job="bad-late", attempt=2)
    assert breakers.state(P).state == CLOSED


def test_an_answer_from_the_provider_ends_a_streak(breakers) -> None:
    fail_jobs(breakers, 3)
    breakers.record_failure(P, "validation", job="v")
    assert not fail_jobs(breakers, 3, first=10)
    breakers.record_success(P, job="s")
    assert not fail_jobs(breakers, 3, first=20)
    assert breakers.state(P).state == CLOSED


def test_most_jobs_failing_again_opens_the_breaker_on_its_rate(breakers) -> None:
    """Answers between the failures keep any streak short; the rate of failing jobs opens it."""
    for n in range(4):
        breakers.record_success(P, job=f"good-{n}")
    for n in range(3):
        assert not breakers.record_failure(P, "timeout", job=f"bad-{n}", attempt=2)
        breakers.record_success(P, job=f"good-{n}")
    # 3 of 7 jobs failing; the fourth makes 4 of 8: 50 %.
    assert breakers.record_failure(P, "timeout", job="bad-3", attempt=2)
    assert breakers.state(P).history[-1]["rule"] == "failure_rate"


def test_a_first_failure_before_a_retry_is_not_a_vote_against_the_provider(breakers) -> None:
    """Jobs that succeed on their second try never count against their provider."""
    for n in range(40):
        breakers.record_failure(P, "service_unavailable", job=f"flaky-{n}")
        breakers.record_success(P, job=f"ok-{n}")
        breakers.record_success(P, job=f"flaky-{n}")
    assert breakers.state(P).state == CLOSED


def test_a_steady_share_of_always_failing_jobs_never_opens_the_breaker(clock) -> None:
    """10 to 30 % of the jobs failing on every attempt, with all defaults: no breaker opens."""
    for share in (0.1, 0.2, 0.3):
        breakers = ProviderBreakers(clock=clock)
        bad = round(100 * share)
        for attempt in range(1, 4):
            for n in range(100):
                clock.now += 0.01
                job = f"{share}-{n}"
                if n % 100 < bad:
                    breakers.record_failure(P, "timeout", job=job, attempt=attempt, last_attempt=attempt == 3)
                elif attempt == 1:
                    breakers.record_success(P, job=job)
        assert breakers.state(P).state == CLOSED, share


def test_retries_failing_in_a_row_say_nothing_new_about_the_provider(breakers) -> None:
    """At the end of a batch, only the always-failing jobs are still retried."""
    for n in range(4):
        breakers.record_success(P, job=f"good-{n}")
    for attempt in (2, 3):
        for n in range(3):
            breakers.record_failure(P, "timeout", job=f"bad-{n}", attempt=attempt)
    assert breakers.state(P).state == CLOSED


def test_a_job_whose_first_failure_left_the_window_no_longer_votes(breakers, clock) -> None:
    for n in range(4):
        breakers.record_success(P, job=f"good-{n}")
    first = clock.now - 11
    for n in range(8):
        breakers.record_failure(P, "timeout", job=f"old-{n}", attempt=5, first_failed_at=first)
    assert breakers.state(P).state == CLOSED


def test_a_provider_failing_every_call_opens_within_its_min_calls(clock) -> None:
    breakers = ProviderBreakers(clock=clock)
    for n in range(100):
        breakers.record_success(P, job=f"before-{n}")
    opened_after = next(n for n in range(1, 100) if fail_jobs(breakers, 1, first=n))
    assert opened_after == 20


def test_min_jobs_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="min_jobs=1 is not allowed"):
        ProviderBreakers(min_jobs=1)


def test_provider_not_found_is_not_a_breaker_category(breakers) -> None:
    for _ in range(10):
        assert not breakers.record_failure(P, "provider_not_found")
    assert breakers.gate(P).admit


def test_a_probe_round_lets_a_few_distinct_jobs_through_and_closes_on_the_first_success(
    breakers, clock, events
) -> None:
    fail_jobs(breakers, 4)
    gate = breakers.gate(P, job="w1")
    assert not gate.admit and gate.reason == "open" and gate.wait_s == pytest.approx(5)
    clock.now += 5
    assert breakers.gate(P, job="w1").probe
    assert breakers.state(P).state == HALF_OPEN
    assert not breakers.gate(P, job="w1").admit  # one probe per job and round
    assert breakers.gate(P, job="w2").probe
    assert breakers.gate(P, job="w3").probe
    fourth = breakers.gate(P, job="w4")
    assert not fourth.admit and fourth.wait_s == pytest.approx(5)
    clock.now += 1
    assert breakers.record_failure(P, "timeout", job="w1")
    assert breakers.record_failure(P, "timeout", job="w2")
    assert breakers.state(P).state == HALF_OPEN
    breakers.record_success(P, job="w3")
    assert breakers.state(P).state == CLOSED
    assert breakers.gate(P, job="w4").admit
    assert [e for _, e in events] == ["opened", "probe", "closed"]


def test_a_round_whose_probes_all_fail_reopens_until_the_next_round(breakers, clock, events) -> None:
    fail_jobs(breakers, 4)
    clock.now += 5
    for job in ("w1", "w2", "w3"):
        assert breakers.gate(P, job=job).probe
    clock.now += 1
    for job in ("w1", "w2", "w3"):
        assert breakers.record_failure(P, "timeout", job=job)
    assert breakers.state(P).state == OPEN
    assert breakers.wait_s(P) == pytest.approx(4)
    clock.now += 4
    assert breakers.gate(P, job="w1").probe
    breakers.record_success(P, job="w1")
    assert [e for _, e in events] == ["opened", "probe", "reopened", "probe", "closed"]


def test_a_closed_breaker_starts_from_fresh_evidence(breakers, clock) -> None:
    fail_jobs(breakers, 4)
    clock.now += 5
    breakers.gate(P, job="w1")
    breakers.record_success(P, job="w1")
    assert not fail_jobs(breakers, 3, first=100)
    assert breakers.state(P).state == CLOSED


def test_retry_after_holds_every_job_for_the_provider(breakers, clock) -> None:
    breakers.record_failure(P, "busy", job="a", retry_after_s=30)
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
    for n in range(4):
        breakers.record_failure(P, "timeout", job=f"job-{n}", retry_after_s=2)
    state = breakers.state(P)
    assert BreakerState.from_dict(state.as_dict()) == state
    assert [h["event"] for h in state.history] == ["retry_after", "opened"]
    with pytest.raises(ValueError, match="not a breaker state"):
        BreakerState.from_dict({"key": P, "state": "ajar"})


def test_state_and_transitions_are_exported_as_metrics(clock) -> None:
    registry = CollectorRegistry()
    breakers = ProviderBreakers(
        min_calls=2, min_jobs=2, probe_interval_s=5, probe_spread=0, clock=clock, registry=registry
    )
    fail_jobs(breakers, 2)
    assert registry.get_sample_value("provider_jobs_breaker_state", {"provider": P}) == 2
    clock.now += 5
    breakers.gate(P)
    breakers.record_success(P)
    assert registry.get_sample_value("provider_jobs_breaker_state", {"provider": P}) == 0
    labels = {"provider": P, "event": "opened"}
    assert registry.get_sample_value("provider_jobs_breaker_transitions_total", labels) == 1


def test_an_opening_on_first_attempts_is_closed_by_a_retry_of_the_streak_that_succeeds(breakers) -> None:
    """Every job failing its first call and succeeding on its second (a stale connection pool,
    say) looks like an outage beginning; the streak's own retries tell it apart at once."""
    assert fail_jobs(breakers, 4)
    assert not breakers.gate(P, job="job-9").admit  # a new job waits
    assert breakers.gate(P, job="job-0").probe  # a retry of the streak's first job goes at once
    assert not breakers.gate(P, job="job-0").admit  # ... once
    breakers.record_success(P, job="job-0")
    assert breakers.state(P).state == CLOSED
    assert breakers.gate(P, job="job-9").admit


def test_an_opening_on_first_attempts_stays_open_when_the_streaks_retries_fail_again(
    breakers, clock, events
) -> None:
    assert fail_jobs(breakers, 4)
    for job in ("job-0", "job-1"):  # min_jobs of the streak are let through to confirm it
        assert breakers.gate(P, job=job).probe
        assert breakers.record_failure(P, "timeout", job=job, attempt=2)
    assert not breakers.gate(P, job="job-2").admit and not breakers.gate(P, job="job-9").admit
    assert breakers.state(P).state == OPEN and events == [(P, "opened")]
    clock.now += 5
    assert breakers.gate(P, job="job-9").probe  # then probe rounds as before


def test_an_opening_on_the_failure_rate_waits_for_its_probe_round(breakers) -> None:
    """Its evidence is decided already (jobs failing again): no job is let through before the round."""
    opened = [breakers.record_failure(P, "timeout", job=f"job-{n}", attempt=2) for n in range(4)]
    assert opened == [False, False, False, True]
    assert breakers.state(P).history[-1]["rule"] == "failure_rate"
    assert not any(breakers.gate(P, job=f"job-{n}").admit for n in range(4))
