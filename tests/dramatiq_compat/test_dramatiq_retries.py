"""Dramatiq's ``tests/middleware/test_retries.py`` behaviours, on a StubBroker with ClassifiedRetries.

Each test checks what its Dramatiq counterpart checks (see README.md beside
this file for the mapping), written our way: the actor raises errors the
classifier files as ``unknown`` (retryable), so the classification itself
never decides here.
"""

from __future__ import annotations

import logging
import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

#: Long enough for any retry a test expects, short enough that a wrong 15 s backoff fails the join.
JOIN_TIMEOUT_MS = 5_000


def settle(broker: StubBroker, worker: dramatiq.Worker, *queue_names: str) -> None:
    """Wait until every message of ``queue_names`` is done, dead letters included."""
    for queue_name in queue_names:
        broker.join(queue_name, timeout=JOIN_TIMEOUT_MS, fail_fast=False)
    worker.join()


def records_at(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_a_failed_actor_is_retried_until_it_succeeds(stub_broker: StubBroker, stub_worker) -> None:
    calls: list[str] = []

    @dramatiq.actor(broker=stub_broker, min_backoff=10, max_backoff=50)
    def do_work() -> None:
        calls.append("failed" if not calls else "succeeded")
        if len(calls) == 1:
            raise RuntimeError("First failure.")

    do_work.send()
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert calls == ["failed", "succeeded"]
    assert stub_broker.dead_letters == []


def test_an_actor_that_always_fails_runs_max_retries_plus_one_times(
    stub_broker: StubBroker, stub_worker
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(broker=stub_broker, max_retries=3, min_backoff=5, max_backoff=20)
    def do_work() -> None:
        attempts.append(1)
        raise RuntimeError("failure")

    do_work.send()
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert len(attempts) == 4
    assert len(stub_broker.dead_letters) == 1


def test_max_age_stops_the_retries_of_an_actor_that_always_fails(
    stub_broker: StubBroker, stub_worker
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(broker=stub_broker, max_age=100, min_backoff=50, max_backoff=500)
    def do_work() -> None:
        attempts.append(1)
        raise RuntimeError("failure")

    do_work.send()
    settle(stub_broker, stub_worker, do_work.queue_name)
    # Backoff doubles from 50 ms: the message is older than 100 ms by the third attempt at the latest.
    assert 1 <= len(attempts) <= 3
    assert len(stub_broker.dead_letters) == 1


def test_dramatiq_retry_past_the_limit_logs_no_error(
    stub_broker: StubBroker, stub_worker, caplog: pytest.LogCaptureFixture
) -> None:
    @dramatiq.actor(broker=stub_broker, max_retries=0)
    def do_work() -> None:
        raise dramatiq.Retry()

    caplog.set_level(logging.DEBUG)
    do_work.send()
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert records_at(caplog, logging.ERROR) == []
    assert records_at(caplog, logging.CRITICAL) == []
    # Retries says "Retries exceeded" at WARNING; the message is dead-lettered all the same.
    assert len(records_at(caplog, logging.WARNING)) == 1
    assert len(stub_broker.dead_letters) == 1


def test_dramatiq_retry_waits_for_its_own_delay(stub_broker: StubBroker, stub_worker) -> None:
    # No min_backoff: without the Retry's delay the default 15 s backoff would apply.
    started: list[float] = []

    @dramatiq.actor(broker=stub_broker, max_retries=1)
    def do_work() -> None:
        started.append(time.monotonic())
        if len(started) == 1:
            raise dramatiq.Retry(delay=50)

    do_work.send()
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert len(started) == 2
    assert 0.05 <= started[1] - started[0] < 1.0


@pytest.mark.parametrize("option", ["min_backoff", "max_backoff"])
def test_an_actor_with_zero_backoff_is_retried_without_delay(
    stub_broker: StubBroker, stub_worker, option: str
) -> None:
    started: list[float] = []

    @dramatiq.actor(broker=stub_broker, max_retries=10, **{option: 0})
    def do_work() -> None:
        started.append(time.monotonic())
        raise RuntimeError("failure")

    do_work.send()
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert len(started) == 11
    assert started[-1] - started[0] < 1.0


@pytest.mark.parametrize("option", ["min_backoff", "max_backoff"])
def test_a_message_with_zero_backoff_overrides_its_actors_backoff(
    stub_broker: StubBroker, stub_worker, option: str
) -> None:
    started: list[float] = []

    @dramatiq.actor(broker=stub_broker, max_retries=10, min_backoff=10_000)
    def do_work() -> None:
        started.append(time.monotonic())
        raise RuntimeError("failure")

    do_work.send_with_options(**{option: 0})
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert len(started) == 11
    assert started[-1] - started[0] < 1.0


@pytest.mark.parametrize("max_retries", [0, 4])
def test_a_messages_max_retries_and_backoff_override_its_actors(
    stub_broker: StubBroker, stub_worker, max_retries: int
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(broker=stub_broker, max_retries=99, min_backoff=5_000, max_backoff=50_000)
    def do_work() -> None:
        attempts.append(1)
        raise RuntimeError("failure")

    do_work.send_with_options(max_retries=max_retries, min_backoff=5, max_backoff=40)
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert len(attempts) == 1 + max_retries


def test_retry_when_decides_whether_and_how_often_to_retry(stub_broker: StubBroker, stub_worker) -> None:
    def should_retry(retries: int, exception: BaseException) -> bool:
        return retries < 3 and isinstance(exception, RuntimeError)

    attempts: list[bool] = []

    @dramatiq.actor(broker=stub_broker, retry_when=should_retry, max_retries=0, min_backoff=5, max_backoff=5)
    def raises_errors(runtime_error: bool) -> None:
        attempts.append(runtime_error)
        raise RuntimeError("Runtime error") if runtime_error else ValueError("Value error")

    raises_errors.send(False)
    settle(stub_broker, stub_worker, raises_errors.queue_name)
    assert attempts == [False]

    raises_errors.send(True)
    settle(stub_broker, stub_worker, raises_errors.queue_name)
    # max_retries=0 would allow one attempt: retry_when takes precedence.
    assert attempts == [False] + [True] * 4


class ExpectedOne(Exception):
    pass


class ExpectedTwo(Exception):
    pass


@pytest.mark.parametrize(
    ("raised", "throws"),
    [
        (ExpectedOne, ExpectedOne),
        (ExpectedOne, (ExpectedOne,)),
        (ExpectedTwo, (ExpectedOne, ExpectedTwo)),
    ],
)
def test_an_expected_exception_is_logged_at_info_and_not_retried(
    stub_broker: StubBroker,
    stub_worker,
    caplog: pytest.LogCaptureFixture,
    raised: type[Exception],
    throws: type[Exception] | tuple[type[Exception], ...],
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(broker=stub_broker, throws=throws)
    def do_work() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise raised("Expected Failure")

    caplog.set_level(logging.DEBUG)
    do_work.send()
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    info = [r.msg for r in caplog.records if r.levelno == logging.INFO]
    assert "Failed to process message %s with expected exception %s." in info
    assert "Aborting message %r." in info
    assert attempts == [1]
    [dead] = stub_broker.dead_letters
    # Retries fails the message before counting a retry.
    assert "retries" not in dead.options


def test_each_retry_carries_a_later_requeue_timestamp(stub_broker: StubBroker, stub_worker) -> None:
    stub_broker.add_middleware(CurrentMessage())
    requeued_at: list[int] = []

    @dramatiq.actor(broker=stub_broker, max_retries=2, min_backoff=10, max_backoff=10)
    def do_work() -> None:
        current = CurrentMessage.get_current_message()
        assert current is not None
        if "requeue_timestamp" in current.options:
            requeued_at.append(current.options["requeue_timestamp"])
        raise RuntimeError("failure")

    # Delayed, so that the first requeue comes strictly after the message's timestamp.
    message = do_work.send_with_options(delay=20)
    settle(stub_broker, stub_worker, do_work.queue_name)
    assert len(requeued_at) == 2
    assert requeued_at[0] < requeued_at[1]
    assert message.message_timestamp < requeued_at[0]


def _exhaustion_actors(broker: StubBroker, *, succeed_on: int | None) -> tuple[list[int], list[dict]]:
    """A ``do_work`` actor that asks for a retry until attempt ``succeed_on`` (never when ``None``),
    and its ``on_retry_exhausted`` handler; returns their attempts and the handler's retry infos."""
    attempts: list[int] = []
    notified: list[dict] = []

    @dramatiq.actor(broker=broker)
    def handle_retries_exhausted(message_data: dict, retry_info: dict) -> None:
        notified.append(retry_info)

    @dramatiq.actor(broker=broker, max_retries=2, on_retry_exhausted="handle_retries_exhausted")
    def do_work() -> None:
        attempts.append(1)
        if succeed_on is None or len(attempts) < succeed_on:
            raise dramatiq.Retry(delay=1)

    do_work.send()
    return attempts, notified


def test_on_retry_exhausted_is_sent_when_retries_run_out(stub_broker: StubBroker, stub_worker) -> None:
    attempts, notified = _exhaustion_actors(stub_broker, succeed_on=None)
    settle(stub_broker, stub_worker, "default")
    assert len(attempts) == 3
    assert notified == [{"retries": 2, "max_retries": 2}]


@pytest.mark.parametrize("succeed_on", [1, 2])
def test_on_retry_exhausted_is_not_sent_when_an_attempt_succeeds(
    stub_broker: StubBroker, stub_worker, succeed_on: int
) -> None:
    attempts, notified = _exhaustion_actors(stub_broker, succeed_on=succeed_on)
    settle(stub_broker, stub_worker, "default")
    assert len(attempts) == succeed_on
    assert notified == []
