from __future__ import annotations

import pika


def test_private_rabbitmq_node_accepts_connections(rabbitmq_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    assert connection.is_open
    connection.close()
