"""Test helpers: condition waits with deadlines, queue depths."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika

def wait_for(predicate: Callable[[], Any], *, timeout_s: float = 10.0, interval_s: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
        time.sleep(interval_s)


def queue_depth(channel: pika.adapters.blocking_connection.BlockingChannel, name: str) -> int:
    """Messages ready in queue ``name`` (declared passively)."""
    return int(channel.queue_declare(name, passive=True).method.message_count)
