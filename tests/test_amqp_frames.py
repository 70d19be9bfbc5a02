"""publish_frames writes exactly the bytes pika's basic_publish writes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pika import frame, spec

from provider_jobs.rabbitmq.frames import publish_frames


def pika_frames(
    channel_number: int, routing_key: str, body: bytes, priority: int | None, message_id: str, body_max: int
) -> list[bytes]:
    """What pika's Connection._send_message marshals for the same publish."""
    properties = spec.BasicProperties(delivery_mode=2, priority=priority, message_id=message_id)
    frames = [
        frame.Method(
            channel_number, spec.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True)
        ).marshal(),
        frame.Header(channel_number, len(body), properties).marshal(),
    ]
    for chunk in range(math.ceil(len(body) / body_max)):
        frames.append(frame.Body(channel_number, body[chunk * body_max : (chunk + 1) * body_max]).marshal())
    return frames


@given(
    channel_number=st.integers(1, 65535),
    routing_key=st.text(max_size=60),
    body=st.binary(max_size=300),
    priority=st.none() | st.integers(0, 255),
    message_id=st.text(max_size=60),
    body_max=st.integers(1, 400),
)
def test_publish_frames_are_pikas_bytes(
    channel_number: int, routing_key: str, body: bytes, priority: int | None, message_id: str, body_max: int
) -> None:
    ours = publish_frames(
        channel_number, routing_key, body, priority=priority, message_id=message_id, body_max=body_max
    )
    assert ours == pika_frames(channel_number, routing_key, body, priority, message_id, body_max)


def test_a_body_larger_than_a_frame_is_split_as_pika_splits_it() -> None:
    body = bytes(range(256)) * 600
    ours = publish_frames(1, "q", body, priority=5, message_id="m", body_max=131_064)
    assert len(ours) == 4
    assert ours == pika_frames(1, "q", body, 5, "m", 131_064)


def test_a_message_id_over_255_bytes_is_refused_with_its_length() -> None:
    with pytest.raises(ValueError, match="message_id is 256 bytes"):
        publish_frames(1, "q", b"{}", priority=None, message_id="é" * 128, body_max=1000)


def test_a_priority_outside_an_octet_is_refused() -> None:
    with pytest.raises(ValueError, match="priority=256 is not allowed"):
        publish_frames(1, "q", b"{}", priority=256, message_id="m", body_max=1000)
