"""What Dramatiq's retry tests take for granted of ``Retries``: its defaults, ceilings and quiet logs.

Dramatiq's tests run with ``Retries``' defaults (``max_backoff`` of 7 days, a
retry logged at INFO) and on a broker without publisher confirms; a user who
swaps the middleware keeps all three.
"""

from __future__ import annotations

import logging

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from dramatiq_compat.swapped import swapped_middleware
from provider_jobs.middleware import ClassifiedRetries, ErrorClassifier

from support import running_worker, wait_for

#: RabbitMQ's default consumer_timeout, which only a held delivery must stay under.
CONSUMER_TIMEOUT_MS = 1_800_000


def first_delay_ms(
    broker: dramatiq.Broker, actor: dramatiq.Actor, exception: BaseException, **options
) -> int:
    """The delay the broker's retry middleware gives ``actor``'s message, sent with ``options``,
    after it raised ``exception``: the middleware's decision alone, no worker."""
    [retries] = [m for m in broker.middleware if isinstance(m, ClassifiedRetries)]
    message = dramatiq.MessageProxy(actor.message_with_options(**options))
    retries.after_process_message(broker, message, exception=exception)
    delay: int = message.options["attempt_history"][-1]["delay_ms"]
    return delay


def test_a_late_retry_backs_off_up_to_dramatiqs_seven_days(stub_broker: StubBroker) -> None:
    @dramatiq.actor(broker=stub_broker)
    def do_work() -> None:
        pass

    # Eleven retries in: 15 s * 2**11 = 8.5 h, to 17 h with jitter; Retries caps at 7 days only.
    delay = first_delay_ms(stub_broker, do_work, RuntimeError("failure"), retries=11)
    assert 15_000 * 2**11 <= delay <= 15_000 * 2**12
    assert delay > CONSUMER_TIMEOUT_MS


def test_an_actors_max_backoff_may_exceed_the_middlewares() -> None:
    broker = StubBroker(middleware=[ClassifiedRetries(classifier=ErrorClassifier(), max_backoff=100)])

    @dramatiq.actor(broker=broker, min_backoff=1_000, max_backoff=5_000)
    def do_work() -> None:
        pass

    # As Retries: the actor's option replaces the middleware's, under the 7-day ceiling only.
    assert 1_000 <= first_delay_ms(broker, do_work, RuntimeError("failure")) <= 2_000


def test_dramatiqs_default_max_backoff_is_accepted_on_rabbitmq(rabbitmq_url: str) -> None:
    retries = ClassifiedRetries(classifier=ErrorClassifier(), max_backoff=DEFAULT_MAX_BACKOFF)
    broker = RabbitmqBroker(url=rabbitmq_url, middleware=[retries])

    @dramatiq.actor(broker=broker, max_backoff=DEFAULT_MAX_BACKOFF)
    def do_work() -> None:
        pass

    assert broker.get_actor("do_work") is do_work
    assert retries.max_backoff == ClassifiedRetries().max_backoff == DEFAULT_MAX_BACKOFF


def test_a_requested_retry_is_logged_at_info_as_retries_logs_it(
    stub_broker: StubBroker, stub_worker, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(broker=stub_broker, max_retries=1)
    def do_work() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise dramatiq.Retry(delay=10)

    caplog.set_level(logging.DEBUG)
    do_work.send()
    stub_broker.join(do_work.queue_name, timeout=5_000, fail_fast=False)
    stub_worker.join()
    assert len(attempts) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    info = [r.msg for r in caplog.records if r.levelno == logging.INFO]
    assert "Retrying message %r in %d milliseconds." in info


def test_a_worker_on_a_broker_without_confirms_boots_without_warnings(
    rabbitmq_url: str, queue_name: str, amqp, caplog: pytest.LogCaptureFixture
) -> None:
    # Dramatiq's default: no publisher confirms. Retries and dead letters in TTL queues use our own.
    broker = RabbitmqBroker(url=rabbitmq_url, middleware=swapped_middleware())
    ran: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def do_work() -> None:
        ran.append(1)

    caplog.set_level(logging.INFO)
    do_work.send()
    with running_worker(broker):
        wait_for(lambda: ran)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
