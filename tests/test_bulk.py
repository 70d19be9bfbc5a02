"""BulkPublisher and JobQueue.submit_many against the private RabbitMQ node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

from provider_jobs.compat import JobQueue
from provider_jobs.errors import BrokerUnavailable, InvalidJob, PublishFailed
from provider_jobs.rabbitmq.bulk import CONFIRMED, RETURNED, UNCONFIRMED, BulkPublisher, OutgoingMessage
from provider_jobs.settings import Settings

from support import queue_depth


def _declare(channel: Any, name: str) -> None:
    channel.queue_declare(name, durable=True, arguments={"x-max-priority": 10})


def _drain(channel: Any, name: str) -> list[tuple[Any, bytes]]:
    taken = []
    while True:
        method, properties, body = channel.basic_get(name, auto_ack=True)
        if method is None:
            return taken
        taken.append((properties, body))


def _messages(queue: str, count: int) -> Iterator[OutgoingMessage]:
    for i in range(count):
        yield OutgoingMessage(routing_key=queue, body=b'{"n":%d}' % i, priority=i % 10, message_id=f"m{i}")


def _job(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "provider_namespace": "ITL.Core",
        "resource_type": "ResourceGroup",
        "operation": "create",
        "request": {"name": f"rg-{i}"},
        **fields,
    }


def test_messages_published_in_many_bursts_arrive_all_and_in_order(
    rabbitmq_url: str, queue_name: str, amqp: Any
) -> None:
    amqp.queue_declare(queue_name, durable=True)  # no priorities: arrival order is publish order
    with BulkPublisher(rabbitmq_url) as publisher:
        result = publisher.publish_many(
            OutgoingMessage(routing_key=queue_name, body=b"%d" % i, message_id=f"m{i}") for i in range(2_500)
        )
    assert result.ok and result.confirmed == list(range(2_500))
    assert [int(body) for _, body in _drain(amqp, queue_name)] == list(range(2_500))


def test_every_message_is_confirmed_persistent_and_queued(
    rabbitmq_url: str, queue_name: str, amqp: Any
) -> None:
    _declare(amqp, queue_name)
    with BulkPublisher(rabbitmq_url, window=50) as publisher:
        result = publisher.publish_many(_messages(queue_name, 500))
    assert result.ok and result.confirmed == list(range(500))
    taken = _drain(amqp, queue_name)
    assert sorted(p.message_id for p, _ in taken) == sorted(f"m{i}" for i in range(500))
    assert {p.delivery_mode for p, _ in taken} == {2}


def test_an_unroutable_message_is_reported_returned_and_its_neighbours_confirmed(
    rabbitmq_url: str, queue_name: str, amqp: Any
) -> None:
    _declare(amqp, queue_name)
    items = [
        OutgoingMessage(routing_key=queue_name, body=b"a"),
        OutgoingMessage(routing_key=f"{queue_name}.nowhere", body=b"b"),
        OutgoingMessage(routing_key=queue_name, body=b"c"),
    ]
    with BulkPublisher(rabbitmq_url) as publisher:
        result = publisher.publish_many(items)
    assert result.confirmed == [0, 2]
    [failure] = result.failures
    assert (failure.index, failure.status) == (1, RETURNED) and "NO_ROUTE" in failure.detail
    assert [body for _, body in _drain(amqp, queue_name)] == [b"a", b"c"]


def test_a_publisher_reconnects_after_its_connection_was_closed_by_the_broker(
    rabbitmq_url: str, queue_name: str, amqp: Any, rabbitmq_proc: RabbitMqExecutor
) -> None:
    _declare(amqp, queue_name)
    amqp.connection.close()  # the fixture reconnects to clean up
    with BulkPublisher(rabbitmq_url) as publisher:
        assert publisher.publish_many(_messages(queue_name, 3)).ok
        rabbitmq_proc.rabbitctl_output("close_all_connections", "test")
        assert publisher.publish_many(_messages(queue_name, 3)).count(CONFIRMED) == 3


def test_an_unreachable_broker_is_a_clear_error_before_anything_is_taken() -> None:
    taken = []

    def items() -> Iterator[OutgoingMessage]:
        taken.append(1)
        yield OutgoingMessage(routing_key="q", body=b"x")

    publisher = BulkPublisher("amqp://guest:guest@127.0.0.1:1/%2F", connect_timeout_s=1)
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1\b"):
        publisher.publish_many(items())
    assert taken == []


@pytest.mark.fault
def test_a_node_stopped_mid_batch_leaves_no_message_reported_confirmed_and_missing(
    rabbitmq_url: str, queue_name: str, amqp: Any, rabbitmq_proc: RabbitMqExecutor
) -> None:
    _declare(amqp, queue_name)
    amqp.connection.close()

    def items() -> Iterator[OutgoingMessage]:
        for i, item in enumerate(_messages(queue_name, 5000)):
            if i == 2000:
                rabbitmq_proc.stop()
            yield item

    publisher = BulkPublisher(rabbitmq_url, window=500, confirm_timeout_s=10)
    try:
        result = publisher.publish_many(items())
    finally:
        publisher.close()
        if not rabbitmq_proc.running():
            rabbitmq_proc.start()
    assert result.total <= 5000 and not result.ok
    assert result.count(CONFIRMED) >= 1500  # the window before the stop
    assert {f.status for f in result.failures} <= {UNCONFIRMED, "not_sent"}
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        queued = {p.message_id for p, _ in _drain(connection.channel(), queue_name)}
        connection.channel().queue_delete(queue_name)
    finally:
        connection.close()
    confirmed = {f"m{i}" for i in result.confirmed}
    assert confirmed <= queued, sorted(confirmed - queued)[:5]
    reported = confirmed | {f"m{f.index}" for f in result.failures}
    assert queued <= reported  # nothing arrived that was not taken and accounted for


def test_submit_many_publishes_the_message_send_would(settings: Settings, amqp: Any) -> None:
    queue = JobQueue(settings=settings)
    try:
        [single] = [queue.submit(**_job(0))]
        ids = queue.submit_many([_job(i, priority=i % 10) for i in range(1, 201)])
    finally:
        queue.close()
    taken = _drain(amqp, settings.queue_name)
    assert len(ids) == 200 and len(taken) == 201
    bodies = {json.loads(body)["options"]["job_id"]: (p, json.loads(body)) for p, body in taken}
    _, sent = bodies[single]
    properties, bulk = bodies[ids[7]]
    assert bulk.keys() == sent.keys() and bulk["options"].keys() == sent["options"].keys()
    assert (bulk["actor_name"], bulk["kwargs"]["job"]["request"]) == ("create_resource", {"name": "rg-8"})
    assert (properties.delivery_mode, properties.priority, properties.message_id) == (
        2,
        8,
        bulk["message_id"],
    )


def test_submit_many_refuses_an_invalid_job_by_index_and_sends_nothing(settings: Settings, amqp: Any) -> None:
    queue = JobQueue(settings=settings)
    try:
        with pytest.raises(InvalidJob, match=r"Job 2: .*priority.*nothing was sent"):
            queue.submit_many([_job(0), _job(1), _job(2, priority=42)])
        queue.submit(**_job(3))
    finally:
        queue.close()
    assert queue_depth(amqp, settings.queue_name) == 1


def test_submit_many_names_the_jobs_that_were_not_confirmed(
    settings: Settings, amqp: Any, rabbitmq_proc: RabbitMqExecutor
) -> None:
    queue = JobQueue(settings=settings)
    policy = f"reject-{settings.queue_name}"
    try:
        queue.submit(**_job(0))  # declares the queue
        # A full queue that rejects new publishes makes RabbitMQ nack them.
        rabbitmq_proc.rabbitctl_output(
            "set_policy", policy, f"^{settings.queue_name}$",
            '{"max-length":1,"overflow":"reject-publish"}', "--apply-to", "queues",
        )  # fmt: skip
        with pytest.raises(PublishFailed, match="3 of 3 jobs were not confirmed") as caught:
            queue.submit_many([_job(i) for i in range(1, 4)])
    finally:
        rabbitmq_proc.rabbitctl_output("clear_policy", policy)
        queue.close()
    assert caught.value.confirmed == []
    assert {why.split(":")[0] for why in caught.value.not_confirmed.values()} == {"nacked"}
    assert queue_depth(amqp, settings.queue_name) == 1


def test_submit_jobs_is_the_awaitable_form(settings: Settings, amqp: Any) -> None:
    queue = JobQueue(settings=settings)
    try:
        ids = asyncio.run(queue.submit_jobs(_job(i) for i in range(5)))
    finally:
        queue.close()
    assert len(ids) == 5 and queue_depth(amqp, settings.queue_name) == 5


@pytest.mark.parametrize("pause_gc", [False, True])
def test_submit_many_holds_the_garbage_collector_off_only_when_asked(
    settings: Settings, amqp: Any, pause_gc: bool
) -> None:
    import gc

    seen: list[bool] = []

    def jobs() -> Iterator[dict[str, Any]]:
        for i in range(3):
            seen.append(gc.isenabled())
            yield _job(i)

    queue = JobQueue(settings=settings)
    try:
        assert gc.isenabled()
        queue.submit_many(jobs(), pause_gc=pause_gc)
    finally:
        queue.close()
    assert seen == [not pause_gc] * 3
    assert gc.isenabled()
    assert queue_depth(amqp, settings.queue_name) == 3


def test_closing_a_publisher_logs_no_warning(
    settings: Settings, amqp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _declare(amqp, settings.queue_name)
    publisher = BulkPublisher(settings.broker_url)
    assert publisher.publish_many(_messages(settings.queue_name, 3)).ok
    with caplog.at_level("WARNING", logger="provider_jobs.rabbitmq.bulk"):
        publisher.close()
    assert caplog.records == []


def test_a_publish_leaves_the_garbage_collector_as_it_was(settings: Settings, amqp: Any) -> None:
    import gc

    _declare(amqp, settings.queue_name)
    seen: list[bool] = []

    def messages() -> Iterator[OutgoingMessage]:
        for message in _messages(settings.queue_name, 3):
            seen.append(gc.isenabled())
            yield message

    with BulkPublisher(settings.broker_url) as publisher:
        assert publisher.publish_many(messages(), rate_per_s=1000).ok
        assert publisher.publish_many(messages()).ok
    assert seen == [True] * 6
    assert gc.isenabled()


def test_a_pika_without_the_frame_writers_private_hook_publishes_with_basic_publish(
    settings: Settings, amqp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provider_jobs.rabbitmq import connection

    monkeypatch.setattr(connection, "_WRITES_FRAMES", False)
    _declare(amqp, settings.queue_name)
    sent = list(_messages(settings.queue_name, 5))
    with BulkPublisher(settings.broker_url) as publisher:
        assert publisher.publish_many(sent).ok
    got = [amqp.basic_get(settings.queue_name, auto_ack=True) for _ in sent]
    assert {(p.delivery_mode, p.priority, p.message_id, body) for _, p, body in got} == {
        (2, m.priority, m.message_id, m.body) for m in sent
    }
