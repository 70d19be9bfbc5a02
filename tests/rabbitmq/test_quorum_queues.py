"""Quorum mode on one node: every queue of a job's family is a quorum queue with at-least-once
dead-lettering; the delivery limit ends in the archive as crash_loop; priorities are accepted;
classic queues are not silently redeclared; several broker URLs fail over."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from dramatiq.common import dq_name, xq_name
from typer.testing import CliRunner

from provider_jobs import cli
from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.dlq.archive.store import DeadLetterArchive
from provider_jobs.dlq.archiver.consumer import DeadLetterArchiver
from provider_jobs.errors import ConfigurationError, ProviderTimeout
from provider_jobs.middleware.publisher import bucket_ms, delay_queue_name
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.rabbitmq import queue_types
from provider_jobs.rabbitmq.bulk import BulkPublisher
from provider_jobs.rabbitmq.connectivity import check_broker
from provider_jobs.rabbitmq.messages import OutgoingMessage
from provider_jobs.rabbitmq.queue_types import (
    DECLARE_LOCK_QUEUE,
    dead_letter_queue_arguments,
    declare_queue,
    queue_arguments,
)
from provider_jobs.settings import Settings

from support import running_worker, wait_for

#: A port nothing listens on: the first of several URLs, to be failed over.
DEAD_URL = "amqp://guest:guest@127.0.0.1:1/%2F"

QUORUM_DEAD_LETTERING = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@pytest.fixture
def quorum(settings: Settings, amqp: Any) -> Settings:
    """Quorum mode on the private node; the retry queue of the test's delay is deleted afterwards."""
    yield settings.replace(queue_type="quorum", max_deliveries=3)
    channel = amqp if amqp.is_open else amqp.connection.channel()
    channel.queue_delete(delay_queue_name(settings.queue_name, bucket_ms(int(settings.retry_delay_s * 1000))))


def _registry(outcomes: list[str], fail_first: set[str]) -> ProviderRegistry:
    lock = threading.Lock()

    def create(job: Any) -> dict[str, bool]:
        with lock:
            if job.job_id in fail_first:
                fail_first.discard(job.job_id)
                raise ProviderTimeout("Connection timeout")
            outcomes.append(job.job_id)
        return {"ok": True}

    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": create}))
    return registry


def _send(actors: dict[str, Any], job_id: str, priority: int = 5) -> None:
    actors["create_resource"].send(
        provider_namespace="ITL.Core",
        resource_type="ResourceGroup",
        operation="create",
        request={},
        job_id=job_id,
        priority=priority,
    )


def _declared_as(channel: Any, name: str, arguments: dict[str, Any]) -> bool:
    """Whether ``name`` exists with ``arguments`` (RabbitMQ answers 406 to any other)."""
    try:
        channel.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 406, exc
        return False
    return True


def test_in_quorum_mode_every_queue_of_a_job_is_a_quorum_queue_with_at_least_once_dead_letters(
    quorum: Settings, rabbitmq_url: str
) -> None:
    outcomes: list[str] = []
    broker = build_broker(quorum)
    actors = declare_provider_actors(broker, _registry(outcomes, {"flaky"}), quorum)
    _send(actors, "flaky")
    with running_worker(broker):
        wait_for(lambda: outcomes == ["flaky"], timeout_s=20)
    queue = quorum.queue_name
    retry = delay_queue_name(queue, bucket_ms(int(quorum.retry_delay_s * 1000)))
    work = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue)}
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        checks = {
            queue: {**work, **QUORUM_DEAD_LETTERING, "x-delivery-limit": 2},
            dq_name(queue): {**work, **QUORUM_DEAD_LETTERING},
            retry: {
                **QUORUM_DEAD_LETTERING,
                "x-message-ttl": bucket_ms(int(quorum.retry_delay_s * 1000)),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            },
            xq_name(queue): {
                "x-queue-type": "quorum",
                "x-overflow": "reject-publish",
                "x-message-ttl": 604800000,
            },
        }
        refused = [
            name
            for name, arguments in checks.items()
            if not _declared_as(connection.channel(), name, arguments)
        ]
    finally:
        connection.close()
    assert refused == []


def test_a_job_sent_with_a_priority_runs_in_quorum_mode_and_the_start_warns_once(
    quorum: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes: list[str] = []
    with caplog.at_level(logging.WARNING, logger="provider_jobs.actors.broker"):
        broker = build_broker(quorum)
    actors = declare_provider_actors(broker, _registry(outcomes, set()), quorum)
    for priority in (0, 9):
        _send(actors, f"p{priority}", priority=priority)
    with running_worker(broker):
        wait_for(lambda: sorted(outcomes) == ["p0", "p9"], timeout_s=20)
    warnings = [r.getMessage() for r in caplog.records if "priorit" in r.getMessage()]
    assert len(warnings) == 1 and "PROVIDER_JOBS_QUEUE_TYPE=quorum" in warnings[0]


def test_starting_in_quorum_mode_against_classic_queues_stops_with_one_line_on_how_to_migrate(
    settings: Settings,
) -> None:
    classic = build_broker(settings.replace(queue_type="classic"))
    classic.declare_queue(settings.queue_name, ensure=True)
    classic.close()
    broker = build_broker(settings.replace(queue_type="quorum"))
    try:
        with pytest.raises(ConfigurationError) as caught:
            broker.declare_queue(settings.queue_name, ensure=True)
    finally:
        broker.close()
    line = str(caught.value)
    assert "\n" not in line
    assert f"queue {settings.queue_name!r} exists on RabbitMQ as a classic queue" in line
    assert "provider-jobs queues migrate --to quorum" in line


def test_a_job_returned_past_the_delivery_limit_is_archived_as_crash_loop(
    quorum: Settings, rabbitmq_url: str, tmp_path: Path
) -> None:
    broker = build_broker(quorum)
    actors = declare_provider_actors(broker, None, quorum)
    _send(actors, "crasher")
    broker.close()
    # What a worker process dying mid-job looks like to RabbitMQ: the delivery comes back, unsettled.
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    returns = 0
    while True:
        method, _properties, _body = channel.basic_get(quorum.queue_name)
        if method is None:
            break
        channel.basic_reject(method.delivery_tag, requeue=True)
        returns += 1
    connection.close()
    archive = DeadLetterArchive(f"sqlite:///{tmp_path / 'archive.sqlite3'}")
    DeadLetterArchiver.from_settings(quorum, archive=archive).run(until_idle=True)
    [record] = archive.find()
    assert returns == 3  # max_deliveries=3: the third return dead-lettered it
    assert (record.job_id, record.category, record.reason) == ("crasher", "crash_loop", "delivery_limit")
    assert "delivery limit (x-delivery-limit), 1 time(s)" in record.error


def test_every_client_fails_over_to_the_next_broker_url(
    quorum: Settings, rabbitmq_url: str, tmp_path: Path
) -> None:
    failover = quorum.replace(broker_url=f"{DEAD_URL}, {rabbitmq_url}")
    check_broker(failover.broker_url, timeout_s=1.0)
    outcomes: list[str] = []
    broker = build_broker(failover)
    actors = declare_provider_actors(broker, _registry(outcomes, set()), failover)
    _send(actors, "via-second-url")
    with running_worker(broker):
        wait_for(lambda: outcomes == ["via-second-url"], timeout_s=20)
    with BulkPublisher(failover.broker_url) as publisher:
        report = publisher.publish_many(
            [OutgoingMessage(routing_key=xq_name(quorum.queue_name), body=b"{}", message_id="m-1")]
        )
    assert report.confirmed == [0]
    archive = DeadLetterArchive(f"sqlite:///{tmp_path / 'archive.sqlite3'}")
    stats = DeadLetterArchiver.from_settings(failover, archive=archive).run(until_idle=True)
    assert stats.archived == 1


def test_queue_type_is_classic_or_quorum_and_a_bad_one_is_refused_in_one_line() -> None:
    assert Settings.from_env({}).queue_type == "classic"
    assert Settings.from_env({"PROVIDER_JOBS_QUEUE_TYPE": "quorum"}).queue_type == "quorum"
    with pytest.raises(
        ConfigurationError,
        match=r"^PROVIDER_JOBS_QUEUE_TYPE='mirrored' is not allowed: expected classic or quorum$",
    ):
        Settings.from_env({"PROVIDER_JOBS_QUEUE_TYPE": "mirrored"})


def test_broker_url_takes_several_urls_separated_by_commas_each_checked() -> None:
    urls = "amqp://a:5672/%2F, amqp://b:5672/%2F,amqps://c:5671/%2F"
    settings = Settings.from_env({"PROVIDER_JOBS_BROKER_URL": urls})
    assert settings.broker_urls == ("amqp://a:5672/%2F", "amqp://b:5672/%2F", "amqps://c:5671/%2F")
    with pytest.raises(
        ConfigurationError, match=r"PROVIDER_JOBS_BROKER_URL=.* or several separated by commas"
    ):
        Settings.from_env({"PROVIDER_JOBS_BROKER_URL": "amqp://a/%2F,http://b/"})


def test_a_quorum_queue_is_created_only_while_its_declarer_holds_the_cluster_wide_lock(
    rabbitmq_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[str] = []
    sleep = time.sleep
    # Counts the declarer's waits for the lock (the test's own polling sleeps too).
    monkeypatch.setattr(
        queue_types.time, "sleep", lambda s: waits.append(threading.current_thread().name) or sleep(s)
    )
    holder = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    lock = holder.channel()
    lock.queue_declare(DECLARE_LOCK_QUEUE, exclusive=True)
    declarer = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    done = threading.Event()

    def declare() -> None:
        declare_queue(declarer, declarer.channel(), queue_name, queue_arguments("quorum"))
        done.set()

    thread = threading.Thread(target=declare, name="declarer")
    thread.start()
    try:
        wait_for(lambda: waits.count("declarer") >= 3, timeout_s=10)  # refused (405) three times: it waits
        assert not done.is_set()
        lock.queue_delete(DECLARE_LOCK_QUEUE)
        thread.join(timeout=10)
        assert done.is_set()
        assert _declared_as(holder.channel(), queue_name, {**QUORUM_DEAD_LETTERING})
    finally:
        thread.join(timeout=10)
        holder.channel().queue_delete(queue_name)
        holder.close()
        declarer.close()


def test_queues_migrate_turns_classic_queues_into_quorum_ones_keeping_every_message(
    settings: Settings, rabbitmq_url: str, tmp_path: Path
) -> None:
    classic = settings.replace(queue_type="classic", retry_delay_s=60.0)
    broker = build_broker(classic)
    actors = declare_provider_actors(broker, None, classic)
    for i in range(30):
        _send(actors, f"job-{i}")
    broker.close()
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    retry = delay_queue_name(settings.queue_name, 60_000)
    # A retry waiting in its classic delay queue, declared as ConfirmPublisher declares it.
    route = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": settings.queue_name}
    channel.queue_declare(retry, durable=True, arguments={"x-message-ttl": 60_000, **route})
    channel.basic_publish("", retry, b'{"not": "a job"}')
    channel.basic_publish("", xq_name(settings.queue_name), b'{"dead": true}')
    connection.close()

    result = CliRunner().invoke(
        cli.app,
        ["queues", "migrate", "--to", "quorum"],
        env={
            "PROVIDER_JOBS_BROKER_URL": rabbitmq_url,
            "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
            "PROVIDER_JOBS_RETRY_DELAY_S": "60",
            "PROVIDER_JOBS_LOG_FORMAT": "json",
        },
    )
    assert result.exit_code == 0, result.output
    assert f"{settings.queue_name}: now quorum, 30 message(s) kept" in result.output
    assert f"{retry}: now quorum, 1 message(s) kept" in result.output
    assert f"{xq_name(settings.queue_name)}: now quorum, 1 message(s) kept" in result.output

    quorum = settings.replace(queue_type="quorum", retry_delay_s=60.0)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        assert _declared_as(
            connection.channel(),
            xq_name(settings.queue_name),
            dead_letter_queue_arguments("quorum", message_ttl_ms=604800000),
        )
        assert _declared_as(
            connection.channel(),
            retry,
            {
                **queue_arguments("quorum"),
                "x-message-ttl": 60_000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": settings.queue_name,
            },
        )
        assert not _exists_any(connection, [f"{name}.migrating" for name in (settings.queue_name, retry)])
        connection.channel().queue_delete(retry)
    finally:
        connection.close()
    outcomes: list[str] = []
    broker = build_broker(quorum)
    declare_provider_actors(broker, _registry(outcomes, set()), quorum)
    with running_worker(broker):
        wait_for(lambda: len(outcomes) == 30, timeout_s=20)
    assert sorted(outcomes) == sorted(f"job-{i}" for i in range(30))


def _exists_any(connection: Any, names: list[str]) -> bool:
    for name in names:
        channel = connection.channel()
        try:
            channel.queue_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            continue
    return False
