"""OrjsonEncoder writes and reads what Dramatiq's JSONEncoder does, and refuses what is not a message."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

import pytest
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from provider_jobs.actors.encoder import OrjsonEncoder

ours, dramatiqs = OrjsonEncoder(), JSONEncoder()


def message(**fields) -> dict:
    """A Dramatiq message's fields, ``fields`` replacing some."""
    base = {
        "queue_name": "provider.jobs",
        "actor_name": "create_resource",
        "args": [],
        "kwargs": {},
        "options": {},
        "message_id": "m-1",
        "message_timestamp": 1_700_000_000_000,
    }
    return {**base, **fields}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_a_message_reads_back_as_dramatiqs_encoder_would_read_it(value) -> None:
    data = message(args=[value], options={"k": value})
    assert ours.decode(ours.encode(data)) == dramatiqs.decode(dramatiqs.encode(data))


@given(json_values)
def test_every_body_dramatiqs_encoder_wrote_reads_the_same(value) -> None:
    body = dramatiqs.encode(message(args=[value]))
    assert ours.decode(body) == dramatiqs.decode(body)


def test_integers_beyond_64_bits_and_non_string_keys_are_kept() -> None:
    data = message(args=[2**70], kwargs={"keys": {1: "a", 2.5: "b", None: "c"}})
    assert ours.decode(ours.encode(data)) == json.loads(json.dumps(data))


def test_a_nan_token_written_by_the_stdlib_still_reads() -> None:
    [value] = ours.decode(dramatiqs.encode(message(args=[float("nan")])))["args"]
    assert math.isnan(value)


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [datetime.datetime(2026, 1, 1), Point(1), object()])
def test_values_dramatiqs_encoder_refuses_are_refused(value) -> None:
    with pytest.raises(TypeError):
        dramatiqs.encode({"args": [value]})
    with pytest.raises(TypeError):
        ours.encode({"args": [value]})


def test_a_body_that_is_not_utf8_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        ours.decode(b"\xff\xfe{")


@pytest.mark.parametrize("number", [-(2**63) - 1, 2**64, 10**30])
def test_a_body_with_an_integer_beyond_64_bits_reads_it_exactly(number) -> None:
    assert ours.decode(dramatiqs.encode(message(args=[number])))["args"] == [number]


def test_a_nan_or_infinity_is_written_as_dramatiqs_encoder_writes_it() -> None:
    data = {"args": [], "options": {"ratio": float("nan"), "cap": float("inf")}}
    assert ours.encode(data) == dramatiqs.encode(data)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"options": []}, "options must be an object, not an array"),
        ({"args": {}}, "args must be an array, not an object"),
        ({"kwargs": []}, "kwargs must be an object, not an array"),
        ({"actor_name": 7}, "actor_name should be a valid string (found an integer)"),
        ({"message_id": 7}, "message_id should be a valid string (found an integer)"),
        ({"message_timestamp": "now"}, "message_timestamp should be a valid integer (found a string)"),
        ({"queue_name": ["q"]}, "queue_name should be a valid string (found an array)"),
        ({"extra": 1}, "unexpected field 'extra'"),
        ({"options": {"throws": "ValueError"}}, "options.throws must be null or absent, not a string"),
        (
            {"options": {"broker_priority": 1000}},
            "options.broker_priority should be less than or equal to 255",
        ),
    ],
)
def test_a_body_that_is_not_a_dramatiq_message_is_a_decode_error_naming_why(fields, reason) -> None:
    with pytest.raises(DecodeError) as caught:
        ours.decode(ours.encode(message(**fields)))
    assert str(caught.value).startswith(f"body is not a Dramatiq message: {reason}")


def test_a_body_nested_deeper_than_json_can_read_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="nested too deeply"):
        ours.decode(b"[" * 100_000 + b"]" * 100_000)
