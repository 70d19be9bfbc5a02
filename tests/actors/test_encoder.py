"""OrjsonEncoder writes and reads what Dramatiq's JSONEncoder does."""

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

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_a_message_reads_back_as_dramatiqs_encoder_would_read_it(value) -> None:
    data = {"args": [value], "options": {"k": value}}
    assert ours.decode(ours.encode(data)) == dramatiqs.decode(dramatiqs.encode(data))


@given(json_values)
def test_every_body_dramatiqs_encoder_wrote_reads_the_same(value) -> None:
    body = dramatiqs.encode({"args": [value]})
    assert ours.decode(body) == dramatiqs.decode(body)


def test_integers_beyond_64_bits_and_non_string_keys_are_kept() -> None:
    data = {"big": 2**70, "keys": {1: "a", 2.5: "b", None: "c"}}
    assert ours.decode(ours.encode(data)) == json.loads(json.dumps(data))


def test_a_nan_token_written_by_the_stdlib_still_reads() -> None:
    [value] = ours.decode(b"[NaN]")
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
    assert ours.decode(dramatiqs.encode({"args": [number]})) == {"args": [number]}


def test_a_nan_or_infinity_is_written_as_dramatiqs_encoder_writes_it() -> None:
    data = {"args": [], "options": {"ratio": float("nan"), "cap": float("inf")}}
    assert ours.encode(data) == dramatiqs.encode(data)
