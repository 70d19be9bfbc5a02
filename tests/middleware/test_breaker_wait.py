"""BreakerWait on a plain Dramatiq app over RabbitMQ: the gate before a job runs, the outcomes it
feeds to the breakers, and the wait of a job whose provider's breaker is open.

Each test runs both wirings a library user has: the ``BreakerWait`` in the broker's list right
after ``ClassifiedRetries(breaker_wait=...)`` (as ``build_broker`` does), and the one that
``ClassifiedRetries(breakers=...)`` makes and runs itself.
"""

from __future__ import annotations

import threading

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from provider_jobs.middleware import BreakerWait, ClassifiedRetries, ProviderBreakers, RetryConfigurationError
from provider_jobs.middleware.breaker_wait import WAITS_OPTION

from support import running_worker, take_dead_letters, wait_for

KEY = "ITL.Core/ResourceGroup"


def open_breakers(*, probe_interval_s: float = 60.0, max_wait_s: float = 1800.0) -> ProviderBreakers:
    """Breakers whose ``KEY`` breaker is open: two jobs failed their last attempt."""
    breakers = ProviderBreakers(
        min_calls=2, min_jobs=2, probe_interval_s=probe_interval_s, probe_spread=0, max_wait_s=max_wait_s
    )
    for job in ("first", "second"):
        breakers.record_failure(KEY, "service_unavailable", job=job, last_attempt=True)
    assert breakers.state(KEY).state == "open"
    return breakers


def wired(wiring: str, breakers: ProviderBreakers, *, park_waiting: bool = False) -> list[Middleware]:
    """The broker's retry middleware for ``breakers``, wired as ``wiring`` says."""
    if wiring == "own middleware":
        wait = BreakerWait(breakers, park_waiting=park_waiting, worker_id="w1")
        return [ClassifiedRetries(retry_delay_ms=20, worker_id="w1", breaker_wait=wait), wait]
    retries = ClassifiedRetries(
        retry_delay_ms=20, worker_id="w1", breakers=breakers, park_waiting=park_waiting
    )
    return [retries]


WIRINGS = pytest.mark.parametrize("wiring", ["own middleware", "made by ClassifiedRetries"])


@WIRINGS
@pytest.mark.parametrize("park_waiting", [False, True], ids=["delay queue", "parked"])
def test_a_job_for_an_open_breaker_never_runs_and_is_dead_lettered_as_provider_down_after_max_wait(
    rabbitmq_url: str, queue_name: str, amqp, wiring: str, park_waiting: bool
) -> None:
    breakers = open_breakers(probe_interval_s=5.0, max_wait_s=0.3)
    broker = RabbitmqBroker(
        url=rabbitmq_url, confirm_delivery=True, middleware=wired(wiring, breakers, park_waiting=park_waiting)
    )
    calls: list[str] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=2)
    def create() -> None:
        calls.append("ran")

    sent = create.send_with_options(provider=KEY, job_id="job-1")
    with running_worker(broker):
        [(_, letter)] = take_dead_letters(amqp, queue_name, 1)
    assert calls == []
    assert letter["message_id"] == sent.message_id
    options = letter["options"]
    details = options["dead_letter"]
    assert (details["reason"], details["category"], details["attempts"], details["max_retries"]) == (
        "provider_down",
        "provider_down",
        1,
        2,
    )
    assert options.get("retries", 0) == 0
    assert options[WAITS_OPTION] >= 1
    assert options["breaker"]["key"] == KEY
    assert options["breaker"]["state"] == "open"


@WIRINGS
def test_a_probe_that_succeeds_closes_the_breaker(rabbitmq_url: str, queue_name: str, wiring: str) -> None:
    breakers = open_breakers(probe_interval_s=0.2)
    broker = RabbitmqBroker(url=rabbitmq_url, confirm_delivery=True, middleware=wired(wiring, breakers))
    ran = threading.Event()

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def create() -> None:
        ran.set()

    create.send_with_options(provider=KEY, job_id="job-1")
    with running_worker(broker):
        assert ran.wait(10)
        wait_for(lambda: breakers.state(KEY).state == "closed")


@WIRINGS
def test_a_failure_of_the_breakers_kind_waits_uncounted_and_any_other_is_retried(
    rabbitmq_url: str, queue_name: str, wiring: str
) -> None:
    breakers = open_breakers()
    middleware = wired(wiring, breakers)
    retries = middleware[0]
    assert isinstance(retries, ClassifiedRetries)
    assert retries.breakers is breakers
    broker = RabbitmqBroker(url=rabbitmq_url, confirm_delivery=True, middleware=middleware)

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def create() -> None:
        pass

    try:
        provider_down = dramatiq.MessageProxy(create.message_with_options(provider=KEY))
        retries.after_process_message(broker, provider_down, exception=ConnectionError("refused"))
        own_fault = dramatiq.MessageProxy(create.message_with_options(provider=KEY))
        retries.after_process_message(broker, own_fault, exception=KeyError("name"))
    finally:
        broker.close()
    assert "retries" not in provider_down.options
    assert provider_down.options[WAITS_OPTION] == 1
    assert provider_down.options["attempt_history"][-1]["category"] == "connection_error"
    assert own_fault.options["retries"] == 1
    assert WAITS_OPTION not in own_fault.options


def test_a_breaker_wait_and_breakers_of_its_own_are_refused_together() -> None:
    breakers = ProviderBreakers()
    with pytest.raises(RetryConfigurationError, match="breaker_wait or breakers, not both"):
        ClassifiedRetries(breaker_wait=BreakerWait(breakers), breakers=breakers)
