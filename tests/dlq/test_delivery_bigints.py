"""A dead letter's body is read exactly as the stdlib reads it, long integers included."""

from __future__ import annotations

import json

import pytest

from provider_jobs.dlq.delivery import decode_message
from provider_jobs.json_bodies import read_json


@pytest.mark.parametrize("number", [-(2**63) - 1, 2**64, 10**30])
def test_an_integer_beyond_64_bits_is_read_exactly(number) -> None:
    body = json.dumps({"args": [number], "kwargs": {}, "options": {"n": number}}).encode()
    assert read_json(body) == json.loads(body)
    message = {"queue_name": "q", "actor_name": "a", "message_id": "m", "message_timestamp": 1}
    body = json.dumps({**message, "args": [number], "kwargs": {}, "options": {}}).encode()
    data, why = decode_message(body)
    assert why is None and data is not None and data["args"] == [number]


def test_a_nan_token_reads_as_the_stdlib_reads_it() -> None:
    assert repr(read_json(b"[NaN]")) == repr(json.loads("[NaN]"))
