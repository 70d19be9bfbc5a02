"""Reaching RabbitMQ: a connection check with one clear error line, and URLs safe to print."""

from __future__ import annotations

import logging
import re
import socket

import pika
import pika.exceptions

from ..errors import BrokerUnavailable

__all__ = ["broker_parameters", "check_broker", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def broker_parameters(broker_url: str) -> list[pika.URLParameters]:
    """Connection parameters for each of the comma-separated URLs in ``broker_url``, in order.

    pika's ``BlockingConnection`` given this list tries each URL in turn: a
    client fails over to the next node of a cluster when one is down.
    """
    return [pika.URLParameters(url.strip()) for url in broker_url.split(",") if url.strip()]


def check_broker(broker_url: str, *, timeout_s: float = 3.0) -> None:
    """Open and close one connection to RabbitMQ at ``broker_url`` (any one of its
    comma-separated URLs will do).

    Raises:
        BrokerUnavailable: RabbitMQ cannot be reached; the message names the
            URL tried (password hidden) and how to start a broker.
    """
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    # pika logs each failed step at ERROR; the single line below says it all.
    pika_logger.setLevel(logging.CRITICAL)
    try:
        reason = ""
        for parameters in broker_parameters(broker_url):
            parameters.connection_attempts = 1
            parameters.socket_timeout = timeout_s
            parameters.blocked_connection_timeout = timeout_s
            try:
                # A plain socket first: pika's own error for a refused port is an empty AMQPConnectionError.
                socket.create_connection((parameters.host, parameters.port), timeout=timeout_s).close()
                pika.BlockingConnection(parameters).close()
                return
            except (pika.exceptions.AMQPError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
        raise BrokerUnavailable(
            f"Cannot reach RabbitMQ at {redact_url(broker_url)} ({reason}). "
            "Start one with `rabbitmq-server -detached` (Debian package rabbitmq-server) "
            "or `docker compose up -d rabbitmq`, or set PROVIDER_JOBS_BROKER_URL."
        )
    finally:
        pika_logger.setLevel(level)
