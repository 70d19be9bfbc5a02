from __future__ import annotations

from provider_jobs.dlq import RecordFilter


def test_describe_keeps_a_filter_field_set_to_zero() -> None:
    assert RecordFilter(since_ms=0).describe() == {"since_ms": 0}
