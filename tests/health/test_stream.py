"""HealthStream and HealthFollower on the private node."""

from __future__ import annotations

import time
from typing import Any

import pytest

from provider_jobs.health import HealthFollower, HealthStream
from provider_jobs.settings import Settings

from support import wait_for


@pytest.fixture
def stream(settings: Settings, amqp: Any) -> HealthStream:
    return HealthStream(settings.broker_url, settings.queue_name)


def test_a_reader_sees_what_was_written_before_it_started_and_stops_at_now(stream) -> None:
    writer = HealthFollower(stream, lambda event: None, sender="writer")
    writer.start()
    try:
        assert writer.caught_up.wait(10)
        writer.send({"type": "announce", "worker": "w1", "at": time.time()})
        seen: list[dict[str, Any]] = []
        wait_for(lambda: stream.read(since=time.time() - 60, on_event=seen.append) and seen)
    finally:
        writer.stop()
    assert [(e["type"], e["worker"], e["sender"]) for e in seen] == [("announce", "w1", "writer")]


def test_a_follower_sees_others_events_not_its_own_and_survives_its_stream_being_deleted(
    stream, amqp
) -> None:
    seen: list[dict[str, Any]] = []
    follower = HealthFollower(stream, seen.append, sender="me")
    other = HealthFollower(stream, lambda event: None, sender="other")
    follower.start()
    other.start()
    try:
        assert follower.caught_up.wait(10) and other.caught_up.wait(10)
        follower.send({"type": "breaker", "n": 1})
        other.send({"type": "breaker", "n": 2})
        wait_for(lambda: [e["n"] for e in seen] == [2])
        amqp.queue_delete(stream.name)
        # Both reconnect and declare it again; what is written after reaches the follower.
        wait_for(
            lambda: (other.send({"type": "breaker", "n": 3}), any(e["n"] == 3 for e in seen))[1],
            timeout_s=20,
            interval_s=0.5,
        )
    finally:
        follower.stop()
        other.stop()
    assert all(e["sender"] == "other" for e in seen)
