"""ClassifiedRetries as a drop-in for Dramatiq's Retries, on a plain Dramatiq app.

Nothing of provider-jobs is used here but the middleware itself: this is what
another Dramatiq service reusing it gets.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, ShutdownNotifications, TimeLimit
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

from provider_jobs.middleware import ClassifiedRetries, ErrorClassifier, RetryConfigurationError
from provider_jobs.middleware.publisher import bucket_ms
from provider_jobs.middleware.retry_log import seconds

from support import depth_or_zero, queue_depth, running_worker, take_dead_letters, wait_for


def plain_broker(url: str, retries: ClassifiedRetries) -> RabbitmqBroker:
    """Dramatiq's default middleware list with Retries swapped for ClassifiedRetries."""
    return RabbitmqBroker(
        url=url,
        confirm_delivery=True,
        middleware=[AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), retries],
    )


@pytest.fixture
def broker(rabbitmq_url: str) -> Iterator[RabbitmqBroker]:
    broker = plain_broker(rabbitmq_url, ClassifiedRetries(retry_delay_ms=20, max_retries=2, worker_id="w1"))
    yield broker
    broker.close()


def flaky_actor(broker: dramatiq.Broker, queue_name: str, *, failures: int, **options) -> list[float]:
    """Declare and send an actor that fails its first ``failures`` attempts with a connection
    error; returns the list its attempts' times (monotonic seconds) are appended to."""
    attempts: list[float] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name, actor_name=f"flaky_{len(broker.actors)}", **options)
    def flaky() -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= failures:
            raise ConnectionError("connection reset by peer")

    flaky.send()
    return attempts


def test_a_plain_dramatiq_actor_is_retried_then_succeeds(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    attempts = flaky_actor(broker, queue_name, failures=2)
    with running_worker(broker):
        wait_for(lambda: len(attempts) == 3)
        broker.join(queue_name, min_successes=3, idle_time=20)
    assert all(b - a >= 0.02 for a, b in itertools.pairwise(attempts))


def test_a_non_retryable_error_is_dead_lettered_at_once_with_its_error(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def strict() -> None:
        calls.append(1)
        raise ValueError("Validation error: missing required field 'name'")

    strict.send()
    with running_worker(broker):
        [(properties, body)] = take_dead_letters(amqp, queue_name, 1)
    dead = body["options"]["dead_letter"]
    assert calls == [1]
    assert (dead["reason"], dead["category"], dead["attempts"]) == ("non_retryable", "validation", 1)
    assert dead["error"] == "Validation error: missing required field 'name'"
    assert properties.delivery_mode == 2
    assert properties.headers["x-provider-jobs-dead-letter"] == "non_retryable"


def test_an_exhausted_job_carries_the_final_attempts_error_and_traceback(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def always_busy() -> None:
        calls.append(1)
        raise RuntimeError(f"backend busy on attempt {len(calls)}")

    always_busy.send()
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    options = body["options"]
    assert len(calls) == 3
    assert options["dead_letter"]["reason"] == "exhausted"
    assert options["dead_letter"]["error"] == "backend busy on attempt 3"
    assert "backend busy on attempt 3" in options["dead_letter"]["traceback"]
    assert [a["attempt"] for a in options["attempt_history"]] == [1, 2, 3]
    assert [a["delay_ms"] for a in options["attempt_history"]] == [20, 20, None]
    assert {a["worker_id"] for a in options["attempt_history"]} == {"w1"}


def test_throws_dead_letters_without_retrying_as_dramatiq_does(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name, throws=(KeyError,))
    def expected_failure() -> None:
        calls.append(1)
        raise KeyError("connection")  # retryable text, but `throws` wins

    expected_failure.send()
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert calls == [1]
    assert body["options"]["dead_letter"]["reason"] == "throws"


def test_retry_when_decides_over_the_classification(broker: RabbitmqBroker, queue_name: str, amqp) -> None:
    calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name, retry_when=lambda retries, exc: retries < 1)
    def permanent_but_retried() -> None:
        calls.append(1)
        raise ValueError("Validation error")

    permanent_but_retried.send()
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert len(calls) == 2
    assert body["options"]["dead_letter"]["reason"] == "retry_when"


def test_dramatiq_retry_asks_for_another_attempt_with_its_delay(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    calls: list[float] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def polite() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise dramatiq.Retry("not yet", delay=150)

    polite.send()
    with running_worker(broker):
        wait_for(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.15


def test_on_retry_exhausted_notifies_the_named_actor(broker: RabbitmqBroker, queue_name: str, amqp) -> None:
    notified: list[dict] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def on_exhausted(message: dict, details: dict) -> None:
        notified.append(details)

    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=0, on_retry_exhausted="on_exhausted")
    def doomed() -> None:
        raise TimeoutError("timed out")

    doomed.send()
    with running_worker(broker):
        wait_for(lambda: notified)
        take_dead_letters(amqp, queue_name, 1)
    assert notified == [{"retries": 0, "max_retries": 0}]


@pytest.mark.fault
def test_a_retry_whose_publish_is_refused_is_dead_lettered_not_lost(
    broker: RabbitmqBroker, queue_name: str, amqp, rabbitmq_proc: RabbitMqExecutor
) -> None:
    # RabbitMQ itself refuses every publish to the delay queues, ours and Dramatiq's (a real nack).
    policy = f"refuse-{queue_name}"
    rabbitmq_proc.rabbitctl_output(
        "set_policy",
        policy,
        f"^{dq_name(queue_name)}$|^{queue_name}\\.retry\\.",
        '{"max-length":0,"overflow":"reject-publish"}',
        "--apply-to",
        "queues",
    )
    try:

        @dramatiq.actor(broker=broker, queue_name=queue_name)
        def transient() -> None:
            raise ConnectionError("connection refused")

        transient.send()
        with running_worker(broker):
            [(_, body)] = take_dead_letters(amqp, queue_name, 1, timeout_s=30)
    finally:
        rabbitmq_proc.rabbitctl_output("clear_policy", policy)
    dead = body["options"]["dead_letter"]
    assert (dead["reason"], dead["category"], dead["error"]) == (
        "retry_publish_failed",
        "connection_error",
        "connection refused",
    )


def test_the_workers_own_traceback_line_is_not_logged_for_classified_failures(
    broker: RabbitmqBroker, queue_name: str, amqp, caplog: pytest.LogCaptureFixture
) -> None:
    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=1)
    def failing() -> None:
        raise TimeoutError("Connection timeout")

    caplog.set_level(logging.INFO)
    failing.send()
    with running_worker(broker):
        take_dead_letters(amqp, queue_name, 1)
    worker_errors = [
        r for r in caplog.records if r.name.startswith("dramatiq.worker") and r.levelno >= logging.ERROR
    ]
    ours = [r.getMessage() for r in caplog.records if r.name == "provider_jobs.retries"]
    assert worker_errors == []
    assert (
        ours[0].startswith("Job ")
        and "failed with retryable error: Connection timeout. Retrying in 0.02s" in ours[0]
    )
    assert ours[0].endswith("(attempt 1/2)")
    assert ours[1].endswith("exhausted all retries and will be moved to DLQ")
    assert len(ours) == 2


def test_a_message_expired_by_age_limit_is_dead_lettered_raw_and_not_logged_as_a_success(
    broker: RabbitmqBroker, queue_name: str, amqp, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name, max_age=60_000)
    def stale() -> None:
        calls.append(1)

    caplog.set_level(logging.INFO)
    broker.enqueue(stale.message().copy(message_timestamp=int(time.time() * 1000) - 3_600_000))
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert calls == []
    assert "dead_letter" not in body["options"]
    assert not any("completed successfully" in m for m in caplog.messages)


# -- delay policy, with Dramatiq's StubBroker (pure middleware logic) ---------------------


def stub_delays(
    retries: ClassifiedRetries, raise_: BaseException, attempts: int, **actor_options
) -> list[int | None]:
    broker = StubBroker(middleware=[retries])
    broker.emit_after("process_boot")
    calls: list[int] = []

    @dramatiq.actor(broker=broker, max_retries=attempts - 1, **actor_options)
    def fail() -> None:
        calls.append(1)
        raise raise_

    fail.send()
    worker = dramatiq.Worker(broker, worker_timeout=10)
    worker.start()
    try:
        wait_for(lambda: broker.dead_letters, timeout_s=30)
    finally:
        worker.stop()
    [dead] = broker.dead_letters
    return [a["delay_ms"] for a in dead.options["attempt_history"]]


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    retries = ClassifiedRetries(retry_delay_ms=10, retry_backoff=True, max_backoff=40)
    delays = stub_delays(retries, TimeoutError("slow"), 5)
    assert 10 <= delays[0] <= 20
    assert 20 <= delays[1] <= 40
    assert all(20 <= d <= 40 for d in delays[2:4])
    assert delays[4] is None


def test_an_actor_option_sets_its_own_fixed_delay() -> None:
    assert stub_delays(ClassifiedRetries(retry_delay_ms=500), TimeoutError(), 2, retry_delay_ms=15) == [
        15,
        None,
    ]


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    class Busy(Exception):
        retry_after_s = 3600

    delays = stub_delays(ClassifiedRetries(retry_delay_ms=5, max_retry_after_ms=30), Busy("busy"), 2)
    assert delays == [30, None]


def test_without_a_fixed_delay_the_default_is_dramatiqs_backoff() -> None:
    retries = ClassifiedRetries(min_backoff=10, max_backoff=25)
    delays = stub_delays(retries, TimeoutError(), 3)
    assert 10 <= delays[0] <= 20 and 12 <= delays[1] <= 25


def test_a_delay_the_delay_queue_would_hold_past_the_consumer_timeout_is_refused_at_declaration(
    rabbitmq_url: str,
) -> None:
    def broker_with(retries: ClassifiedRetries) -> RabbitmqBroker:
        return RabbitmqBroker(url=rabbitmq_url, middleware=[retries])

    held = broker_with(ClassifiedRetries(native_delays=False, max_backoff=2_000_000))
    with pytest.raises(
        RetryConfigurationError,
        match=r"^ClassifiedRetries: max_backoff=2000000 ms is at or above RabbitMQ's consumer_timeout "
        r"\(1800000 ms\), and with native_delays=False a retry waits in q\.DQ, held unacked",
    ):
        dramatiq.actor(lambda: None, actor_name="slow", queue_name="q", broker=held)
    held = broker_with(ClassifiedRetries(native_delays=False))
    with pytest.raises(RetryConfigurationError, match=r"^actor 'too_slow': retry_delay_ms=3600000 ms"):
        dramatiq.actor(lambda: None, actor_name="too_slow", broker=held, retry_delay_ms=3_600_000)
    # Backed off, a fixed delay is only the factor: max_backoff (27 min by default here) caps it.
    dramatiq.actor(
        lambda: None, actor_name="capped", broker=held, retry_delay_ms=3_600_000, retry_backoff=True
    )


def test_long_delays_are_accepted_where_retries_wait_in_ttl_queues(rabbitmq_url: str) -> None:
    broker = RabbitmqBroker(url=rabbitmq_url, middleware=[ClassifiedRetries(retry_delay_ms=3_600_000)])
    dramatiq.actor(lambda: None, actor_name="hourly", broker=broker, max_backoff=7 * 86_400_000)
    # Other brokers' consumers are not RabbitMQ's: consumer_timeout does not apply.
    stub = StubBroker(middleware=[ClassifiedRetries(native_delays=False, max_backoff=7 * 86_400_000)])
    dramatiq.actor(lambda: None, actor_name="weekly", broker=stub)


def test_a_hold_limit_at_or_above_the_consumer_timeout_is_refused_at_start() -> None:
    with pytest.raises(
        RetryConfigurationError,
        match=r"^ClassifiedRetries: hold_retries_up_to_ms=1800000 ms is at or above .* "
        r"a retry due within it waits in the worker's consumer, held unacked",
    ):
        ClassifiedRetries(hold_retries_up_to_ms=1_800_000)


def test_a_delay_that_is_not_whole_ms_is_refused_wherever_retries_wait() -> None:
    with pytest.raises(
        RetryConfigurationError, match=r"^ClassifiedRetries: retry_delay_ms=1.5 is not allowed"
    ):
        ClassifiedRetries(retry_delay_ms=1.5)  # type: ignore[arg-type]
    broker = StubBroker(middleware=[ClassifiedRetries()])
    with pytest.raises(RetryConfigurationError, match=r"^actor 'negative': max_backoff=-1 is not allowed"):
        dramatiq.actor(lambda: None, actor_name="negative", broker=broker, max_backoff=-1)


def test_a_custom_classifier_decides_what_is_retried() -> None:
    never = ErrorClassifier(unknown_retryable=False)
    assert stub_delays(ClassifiedRetries(classifier=never, retry_delay_ms=5), KeyError("x"), 3) == [None]


class _CutBrokerOnRetry(dramatiq.Middleware):
    """Stops the RabbitMQ node just before the first retry is published, then starts it again.

    Placed after ClassifiedRetries, its ``after_process_message`` runs first
    (Dramatiq runs after-hooks in reverse order).
    """

    def __init__(self, node: RabbitMqExecutor) -> None:
        self.node = node
        self.cut = False

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.Message, *, result=None, exception=None
    ) -> None:
        if exception is not None and not self.cut:
            self.cut = True
            self.node.stop()
            threading.Thread(target=self.node.start, daemon=True).start()


@pytest.mark.fault
def test_a_retry_cut_off_by_a_broker_restart_is_redelivered_not_lost(
    rabbitmq_url: str, queue_name: str, rabbitmq_proc: RabbitMqExecutor
) -> None:
    cutter = _CutBrokerOnRetry(rabbitmq_proc)
    broker = RabbitmqBroker(
        url=rabbitmq_url,
        confirm_delivery=True,
        middleware=[ClassifiedRetries(retry_delay_ms=20, max_retries=5), cutter],
    )
    calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def flaky_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("connection reset")

    try:
        flaky_once.send()
        with running_worker(broker):
            wait_for(lambda: len(calls) >= 2, timeout_s=90)
    finally:
        wait_for(lambda: _node_answers(rabbitmq_url), timeout_s=90)
    assert cutter.cut


def _node_answers(url: str) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPError:
        return False
    return True


# -- RabbitMQ-native delays ----------------------------------------------------------------


def test_a_retry_waits_in_a_ttl_queue_that_rabbitmq_routes_back_when_due(
    broker: RabbitmqBroker, queue_name: str, amqp, rabbitmq_url: str
) -> None:
    attempts = flaky_actor(broker, queue_name, failures=1, retry_delay_ms=300)
    with running_worker(broker):
        wait_for(lambda: len(attempts) == 1)
        bucket = f"{queue_name}.retry.300"
        wait_for(lambda: depth_or_zero(rabbitmq_url, bucket) == 1)
        assert queue_depth(amqp, dq_name(queue_name)) == 0
        wait_for(lambda: len(attempts) == 2)
    assert 0.3 <= attempts[1] - attempts[0] < 1.0
    assert queue_depth(amqp, bucket) == 0


def test_with_native_delays_off_retries_go_through_dramatiqs_delay_queue(
    rabbitmq_url: str, queue_name: str, amqp
) -> None:
    broker = plain_broker(rabbitmq_url, ClassifiedRetries(retry_delay_ms=50, native_delays=False))
    attempts = flaky_actor(broker, queue_name, failures=1)
    with running_worker(broker):
        wait_for(lambda: len(attempts) == 2)
    assert attempts[1] - attempts[0] >= 0.05
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        amqp.queue_declare(f"{queue_name}.retry.50", passive=True)


def decide(broker: dramatiq.Broker, actor: dramatiq.Actor, exception: BaseException) -> dramatiq.MessageProxy:
    """Let the broker's ClassifiedRetries decide about ``actor``'s message that raised ``exception``."""
    [retries] = [m for m in broker.middleware if isinstance(m, ClassifiedRetries)]
    message = dramatiq.MessageProxy(actor.message())
    retries.after_process_message(broker, message, exception=exception)
    return message


def delay_queue_eta_ms(channel, queue_name: str) -> int:
    """The eta of the one message waiting in ``<queue>.DQ``, taken off it."""
    method, _, body = channel.basic_get(dq_name(queue_name), auto_ack=True)
    assert method is not None
    eta: int = json.loads(body)["options"]["eta"]
    return eta


def test_a_long_retry_waits_in_its_ttl_queue_without_being_shortened(
    rabbitmq_url: str, queue_name: str, amqp
) -> None:
    broker = plain_broker(rabbitmq_url, ClassifiedRetries())

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def later() -> None:
        pass

    bucket = f"{queue_name}.retry.3600000"
    try:
        message = decide(broker, later, dramatiq.Retry(delay=3_600_000))
        assert message.options["attempt_history"][-1]["delay_ms"] == 3_600_000
        assert depth_or_zero(rabbitmq_url, bucket) == 1
    finally:
        amqp.queue_delete(bucket)
        broker.close()


def test_with_native_delays_off_a_long_retry_is_shortened_below_the_consumer_timeout(
    rabbitmq_url: str, queue_name: str, amqp
) -> None:
    broker = plain_broker(
        rabbitmq_url,
        ClassifiedRetries(native_delays=False, consumer_timeout_ms=100_000, max_retry_after_ms=50_000),
    )

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def later() -> None:
        pass

    sent_ms = int(time.time() * 1000)
    try:
        message = decide(broker, later, dramatiq.Retry(delay=3_600_000))
    finally:
        broker.close()
    assert message.options["attempt_history"][-1]["delay_ms"] == 90_000
    assert 90_000 <= delay_queue_eta_ms(amqp, queue_name) - sent_ms < 95_000


def test_a_retry_that_falls_back_to_the_delay_queue_is_shortened_below_the_consumer_timeout(
    rabbitmq_url: str,
    queue_name: str,
    amqp,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    retries = ClassifiedRetries(consumer_timeout_ms=100_000)
    broker = plain_broker(rabbitmq_url, retries)

    def refuse(*args, **kwargs) -> int:
        raise pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED")

    monkeypatch.setattr(retries._publisher, "publish_delayed", refuse)

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def later() -> None:
        pass

    sent_ms = int(time.time() * 1000)
    try:
        decide(broker, later, dramatiq.Retry(delay=3_600_000))
    finally:
        broker.close()
    assert 90_000 <= delay_queue_eta_ms(amqp, queue_name) - sent_ms < 95_000
    assert any("using " + dq_name(queue_name) in m for m in caplog.messages)


def test_a_due_retry_runs_before_the_backlog_of_its_priority(
    rabbitmq_url: str, queue_name: str, amqp
) -> None:
    broker = RabbitmqBroker(
        url=rabbitmq_url, confirm_delivery=True, max_priority=10,
        middleware=[ClassifiedRetries(retry_delay_ms=20)],
    )  # fmt: skip
    order: list[str] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def job(name: str) -> None:
        order.append(name)
        if name == "flaky" and order.count("flaky") == 1:
            raise ConnectionError("connection reset")
        time.sleep(0.005)  # a backlog that takes about a second to drain

    job.send_with_options(args=("flaky",), broker_priority=5)
    for n in range(200):
        job.send_with_options(args=(f"backlog-{n}",), broker_priority=5)
    with running_worker(broker, threads=1):
        wait_for(lambda: len(order) == 202, timeout_s=30)
    second = [i for i, name in enumerate(order) if name == "flaky"][1]
    assert second < 30, f"the retry ran at position {second} of 202"


@pytest.mark.parametrize(
    ("delay", "bucket"),
    [(0, 1), (7, 7), (99, 99), (100, 100), (101, 110), (5000, 5000), (5234, 5300), (123456, 130000)],
)
def test_delays_round_up_to_two_significant_digits(delay: int, bucket: int) -> None:
    assert bucket_ms(delay) == bucket


@pytest.mark.parametrize(
    ("delay_ms", "logged"),
    [
        (20, "0.02"),
        (5000, "5.0"),
        (5300, "5.3"),
        (17_234, "17.2"),
        (99_999, "100"),
        (172_345, "172"),
        (999_999, "1000"),
        (1_234_567, "1235"),
    ],
)
def test_a_retry_delay_is_logged_in_seconds_without_exponents_above_1000_s(
    delay_ms: int, logged: str
) -> None:
    assert seconds(delay_ms) == logged


# -- nothing is lost when our own decision fails ---------------------------------------------


def _raising_rule(exception: BaseException) -> None:
    raise RuntimeError("a buggy user rule")


def test_a_raising_classifier_rule_nacks_the_message_instead_of_losing_it(
    rabbitmq_url: str, queue_name: str, amqp
) -> None:
    retries = ClassifiedRetries(classifier=ErrorClassifier(rules=[_raising_rule]), retry_delay_ms=20)
    broker = plain_broker(rabbitmq_url, retries)

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def failing() -> None:
        raise TimeoutError("Connection timeout")

    failing.send()
    with running_worker(broker):
        [(properties, body)] = take_dead_letters(amqp, queue_name, 1)
    # Nacked: RabbitMQ dead-lettered the delivery itself.
    assert properties.headers["x-death"][0]["reason"] == "rejected"
    assert body["actor_name"] == "failing"


def test_an_unknown_on_retry_exhausted_actor_does_not_lose_the_dead_letter(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=0, on_retry_exhausted="no_such_actor")
    def doomed() -> None:
        raise TimeoutError("timed out")

    doomed.send()
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert body["options"]["dead_letter"]["reason"] == "exhausted"


def test_on_retry_exhausted_is_notified_when_retry_when_gives_up(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    notified: list[dict] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def on_exhausted(message: dict, details: dict) -> None:
        notified.append(details)

    @dramatiq.actor(
        broker=broker,
        queue_name=queue_name,
        retry_when=lambda retries, exc: False,
        on_retry_exhausted="on_exhausted",
    )
    def doomed() -> None:
        raise TimeoutError("timed out")

    doomed.send()
    with running_worker(broker):
        wait_for(lambda: notified)
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert body["options"]["dead_letter"]["reason"] == "retry_when"


class _CloseThreadConnection(dramatiq.Middleware):
    """Closes the worker thread's publishing connection just before each dead letter is published."""

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if exception is not None:
            broker.connection.close()


def test_dead_letters_keep_their_final_error_after_the_threads_connection_died(
    rabbitmq_url: str, queue_name: str, amqp
) -> None:
    broker = RabbitmqBroker(
        url=rabbitmq_url, confirm_delivery=True,
        middleware=[ClassifiedRetries(retry_delay_ms=20), _CloseThreadConnection()],
    )  # fmt: skip

    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=0)
    def strict(n: int) -> None:
        raise ValueError(f"Validation error number {n}")

    for n in range(3):
        strict.send(n)
    with running_worker(broker, threads=1):
        dead = take_dead_letters(amqp, queue_name, 3)
    assert sorted(body["options"]["dead_letter"]["error"] for _, body in dead) == [
        f"Validation error number {n}" for n in range(3)
    ]
