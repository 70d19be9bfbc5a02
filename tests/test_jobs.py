from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider_jobs import InvalidJob, ProviderJob, parse_job

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup", "operation": "create"}


def test_a_job_gets_an_id_a_default_priority_and_a_submission_time() -> None:
    job = parse_job(RG)
    assert len(job.job_id) == 32 and job.priority == 5 and job.request == {}
    assert job.submitted_at.tzinfo is not None
    assert job.provider == "ITL.Core/ResourceGroup"


def test_a_job_survives_its_round_trip_through_a_message() -> None:
    job = parse_job(
        {**RG, "request": {"name": "rg", "tags": {"a": 1}}, "priority": 9, "correlation_id": "c-1"}
    )
    assert parse_job(job.to_message()) == job


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"priority": 10}, "priority: Input should be less than or equal to 9"),
        ({"priority": "5"}, "priority: Input should be a valid integer"),
        ({"request": [1, 2]}, "request: Input should be a valid dictionary"),
        ({"provider_namespace": "ITL Core"}, "provider_namespace: String should match pattern"),
        ({"operation": ""}, "operation: String should match pattern"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_an_invalid_job_names_the_offending_field(change: dict, message: str) -> None:
    with pytest.raises(InvalidJob, match=message) as caught:
        parse_job({**RG, **change})
    assert str(caught.value).startswith("Validation error: invalid job: ")


def test_a_job_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidJob, match="a job must be a JSON object, not list"):
        parse_job([1])  # type: ignore[arg-type]


@given(priority=st.integers(min_value=0, max_value=9), name=st.text(max_size=20))
def test_any_priority_from_0_to_9_and_any_request_text_is_accepted(priority: int, name: str) -> None:
    assert ProviderJob(**RG, priority=priority, request={"name": name}).priority == priority


def test_a_jobs_idempotency_key_is_its_job_id_and_is_left_out_of_its_message() -> None:
    job = parse_job({**RG, "job_id": "job-1"})
    assert job.idempotency_key == "job-1"
    # The message's shape is what it was before the field: older workers still take it.
    assert "idempotency_key" not in job.to_message()
    assert parse_job(job.to_message()).idempotency_key == "job-1"


def test_a_message_from_before_idempotency_keys_is_read_with_its_job_id_as_key() -> None:
    old_message = {**RG, "job_id": "old-1", "request": {}, "priority": 5, "correlation_id": None}
    assert parse_job(old_message).idempotency_key == "old-1"


def test_a_key_of_its_own_travels_in_the_message() -> None:
    job = parse_job({**RG, "job_id": "job-1", "idempotency_key": "key-7"})
    assert job.to_message()["idempotency_key"] == "key-7"
    assert parse_job(job.to_message()).idempotency_key == "key-7"


def test_a_rekeyed_job_has_a_key_of_its_content_under_its_job_id() -> None:
    job = parse_job({**RG, "job_id": "job-1", "request": {"name": "a"}})
    rekeyed = job.rekeyed()
    assert rekeyed.idempotency_key.startswith("job-1.") and rekeyed.idempotency_key != job.idempotency_key
    assert rekeyed.model_dump(exclude={"idempotency_key"}) == job.model_dump(exclude={"idempotency_key"})
    # The same content gets the same key, whatever key it had; other content another.
    assert parse_job(rekeyed.to_message()).rekeyed().idempotency_key == rekeyed.idempotency_key
    other = parse_job({**job.to_message(), "request": {"name": "b"}}).rekeyed()
    assert other.idempotency_key.startswith("job-1.") and other.idempotency_key != rekeyed.idempotency_key


def test_an_empty_idempotency_key_is_refused() -> None:
    with pytest.raises(InvalidJob, match="idempotency_key: String should have at least 1 character"):
        parse_job({**RG, "idempotency_key": ""})


def test_a_bad_job_id_is_named_once_not_again_through_the_key_it_defaults() -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_job({**RG, "job_id": ""})
    assert (
        str(caught.value) == "Validation error: invalid job: job_id: String should have at least 1 character"
    )
