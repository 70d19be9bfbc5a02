"""Dead letters are read and replayed exactly: long integers, NaN and infinities included."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider_jobs.dlq.archive.delivery import decode_message
from provider_jobs.json_bodies import read_json, write_json


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


def test_a_replayed_body_keeps_its_nan_and_long_integers() -> None:
    message = {"args": [float("nan"), 2**70], "kwargs": {}, "options": {"x": float("inf")}}
    assert write_json(message) == json.dumps(message, separators=(",", ":")).encode()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
        max_leaves=20,
    )
)
def test_non_finite_floats_are_found_wherever_they_are(value) -> None:
    from provider_jobs.json_bodies import has_non_finite

    try:
        json.dumps(value, allow_nan=False)
        expected = False
    except ValueError:
        expected = True
    assert has_non_finite(value) is expected
