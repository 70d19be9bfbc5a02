"""GET /queue-stats against the private RabbitMQ node."""

from __future__ import annotations

from typing import Any

import pika
from dramatiq.common import dq_name, xq_name
from fastapi.testclient import TestClient

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.api import create_app
from provider_jobs.settings import Settings


def RETRY(settings: Settings) -> str:
    """The delay bucket of the settings' fixed retry delay (20 ms in tests)."""
    return f"{settings.queue_name}.retry.{int(settings.retry_delay_s * 1000)}"


JOB = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup", "operation": "create"}


def _rabbitmq_reports(channel: Any, name: str) -> dict[str, int]:
    method = channel.queue_declare(name, passive=True).method
    return {"messages_ready": method.message_count, "consumers": method.consumer_count}


def test_queue_stats_equal_what_rabbitmq_reports(
    client: TestClient, settings: Settings, amqp: Any, rabbitmq_url: str
) -> None:
    broker = build_broker(settings)
    actors = declare_provider_actors(broker, None, settings)
    for _ in range(3):
        actors["create_resource"].send(JOB)
    broker.close()
    for _ in range(2):
        amqp.basic_publish("", xq_name(settings.queue_name), b"{}")
    # The delay bucket exists once a retry waited in it, declared as ClassifiedRetries declares it.
    amqp.queue_declare(
        RETRY(settings),
        durable=True,
        arguments={
            "x-message-ttl": 20,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": settings.queue_name,
        },
    )
    consumer = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    consumer.channel().basic_consume(dq_name(settings.queue_name), lambda *args: None)
    try:
        response = client.get("/queue-stats")
        reported = {
            name: _rabbitmq_reports(amqp, name)
            for name in (
                settings.queue_name,
                dq_name(settings.queue_name),
                RETRY(settings),
                xq_name(settings.queue_name),
            )
        }
    finally:
        consumer.close()

    assert response.status_code == 200
    served = {
        q["name"]: {"messages_ready": q["messages_ready"], "consumers": q["consumers"]}
        for q in response.json()["queues"]
    }
    assert served == reported
    assert reported[settings.queue_name]["messages_ready"] == 3
    assert reported[xq_name(settings.queue_name)]["messages_ready"] == 2
    assert reported[dq_name(settings.queue_name)]["consumers"] == 1
    assert [q["role"] for q in response.json()["queues"]] == ["work", "delay", "retry", "dead_letter"]


def test_queues_not_declared_yet_are_reported_absent_with_zeros(
    client: TestClient, settings: Settings
) -> None:
    response = client.get("/queue-stats")

    assert response.status_code == 200
    assert response.json()["queues"] == [
        {"name": name, "role": role, "exists": False, "messages_ready": 0, "consumers": 0}
        for name, role in (
            (settings.queue_name, "work"),
            (dq_name(settings.queue_name), "delay"),
            (RETRY(settings), "retry"),
            (xq_name(settings.queue_name), "dead_letter"),
        )
    ]


def test_queue_stats_answer_503_naming_the_broker_when_it_cannot_be_reached(settings: Settings) -> None:
    unreachable = settings.replace(broker_url="amqp://guest:s3cret@127.0.0.1:1/%2F")

    with TestClient(create_app(unreachable)) as client:
        response = client.get("/queue-stats")

    assert response.status_code == 503
    assert "127.0.0.1:1" in response.json()["detail"]
    assert "s3cret" not in response.json()["detail"]
