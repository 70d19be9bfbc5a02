from __future__ import annotations

import dataclasses
import json

import pytest
from dlq_support import dramatiq_body

from provider_jobs.dlq import DeadLetter, dead_letter_from_delivery, fingerprint, normalise_error


def _enriched(job_id: str, error: str, category: str, reason: str = "exhausted") -> bytes:
    body = json.loads(dramatiq_body("provider.jobs", job_id=job_id))
    body["options"] = {
        "job_id": job_id,
        "provider": "ITL.Core/ResourceGroup",
        "operation": "create",
        "retries": 3,
        "attempt_history": [{"attempt": 3, "category": category, "error": error, "error_type": "X"}],
        "dead_letter": {
            "reason": reason,
            "category": category,
            "retryable": False,
            "error_type": "X",
            "error": error,
            "traceback": "Traceback...\nX: " + error,
            "attempts": 3,
            "max_retries": 2,
            "dead_lettered_at_ms": 1_700_000_000_000,
        },
    }
    return json.dumps(body).encode()


def test_an_enriched_dead_letter_keeps_the_final_failure() -> None:
    record = dead_letter_from_delivery(
        _enriched("job-1", "No provider found for ITL.Core/ResourceGroup", "provider_not_found"),
        {"x-provider-jobs-dead-letter": "exhausted"},
        source_queue="provider.jobs.XQ",
    )
    assert (record.job_id, record.category, record.reason, record.attempts) == (
        "job-1",
        "provider_not_found",
        "exhausted",
        3,
    )
    assert (record.provider, record.operation, record.request) == (
        "ITL.Core/ResourceGroup",
        "create",
        {"name": "rg-1"},
    )
    assert record.dead_lettered_ms == 1_700_000_000_000
    assert record.traceback is not None and record.traceback.endswith("ResourceGroup")
    assert record.dedupe_key == f"msg:{record.message_id}"


def test_provider_not_found_groups_across_job_ids_and_validation_stays_apart() -> None:
    not_found = [
        dead_letter_from_delivery(
            _enriched(f"job-{i}", "No provider found for ITL.Core/ResourceGroup", "provider_not_found"),
            {},
            source_queue="q.XQ",
        )
        for i in range(3)
    ]
    validation = dead_letter_from_delivery(
        _enriched("job-9", "Validation error: missing required field 'name'", "validation", "non_retryable"),
        {},
        source_queue="q.XQ",
    )
    assert len({r.job_id for r in not_found}) == 3
    assert len({r.fingerprint for r in not_found}) == 1
    assert validation.fingerprint != not_found[0].fingerprint


def test_ids_numbers_and_quoted_values_are_normalised_away() -> None:
    a = normalise_error(
        "Timeout after 30 s calling job 3f2a9c1e8b7d4e6f on 'rg-1' (id 1c9e7b9a-5a5b-4d1e-9f00-aa11bb22cc33)"
    )
    b = normalise_error(
        "Timeout after 45 s calling job 99aa00bb11cc22dd on 'rg-2' (id 00000000-0000-4000-8000-000000000000)"
    )
    assert a == b == "Timeout after <n> s calling job <id> on <value> (id <id>)"
    assert fingerprint(
        category="timeout", provider_namespace="A", resource_type="B", operation="get", error=a
    ) != fingerprint(category="timeout", provider_namespace="A", resource_type="C", operation="get", error=a)


def test_a_body_that_is_not_json_is_kept_byte_for_byte() -> None:
    body = b"\x00\xffnot json at all"
    record = dead_letter_from_delivery(body, None, source_queue="q.XQ")
    assert (record.category, record.body, record.message_id) == ("undecodable", body, None)
    assert record.error.startswith("body is not UTF-8")


def test_json_that_is_not_a_dramatiq_message_is_undecodable() -> None:
    record = dead_letter_from_delivery(b'{"hello": "world"}', None, source_queue="q.XQ")
    assert record.category == "undecodable"
    assert "missing" in record.error


def test_a_plain_nacked_message_reads_its_x_death_and_previous_attempt() -> None:
    body = json.loads(dramatiq_body("provider.jobs"))
    body["options"] = {
        "retries": 1,
        "attempt_history": [
            {
                "attempt": 1,
                "category": "timeout",
                "retryable": True,
                "error_type": "TimeoutError",
                "error": "slow",
            }
        ],
    }
    x_death = [{"count": 1, "reason": "rejected", "queue": "provider.jobs", "time": 1_700_000_001}]
    record = dead_letter_from_delivery(
        json.dumps(body).encode(), {"x-death": x_death}, source_queue="provider.jobs.XQ"
    )
    assert (record.category, record.reason, record.error, record.attempts) == (
        "timeout",
        "rejected",
        "slow",
        1,
    )
    assert record.dead_lettered_ms == 1_700_000_001_000
    assert record.x_death == x_death


def test_a_record_read_from_a_delivery_is_the_one_its_constructor_makes() -> None:
    for body in (_enriched("job-1", "boom", "unknown"), b"not json"):

        def read(body: bytes = body) -> DeadLetter:
            return dead_letter_from_delivery(body, {"x-death": []}, source_queue="provider.jobs.XQ")

        record = read()
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(DeadLetter)}
        assert vars(record) == vars(DeadLetter(**fields))
        # A default made by a factory is each record's own.
        assert read().replay_message_ids is not record.replay_message_ids


def test_json_the_strict_decoder_refuses_is_read_as_the_stdlib_reads_it() -> None:
    body = json.loads(dramatiq_body("provider.jobs"))
    body["kwargs"] = {"ratio": float("nan"), "big": 2**70}
    record = dead_letter_from_delivery(json.dumps(body).encode(), None, source_queue="provider.jobs.XQ")
    assert record.category != "undecodable"
    message = record.decoded_body()
    assert message is not None and message["kwargs"]["big"] == 2**70


REJECTED_ON = [{"count": 1, "reason": "rejected", "queue": "provider.jobs", "time": 1_700_000_001}]


def test_a_message_with_an_extra_top_level_field_is_undecodable_and_says_which() -> None:
    body = json.loads(dramatiq_body("provider.jobs"))
    body["priority_hint"] = "urgent"
    record = dead_letter_from_delivery(
        json.dumps(body).encode(), {"x-death": REJECTED_ON}, source_queue="provider.jobs.XQ"
    )
    assert record.category == "undecodable"
    assert record.error == "body is not a Dramatiq message: unexpected field 'priority_hint'"


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("options", [], "options must be an object, not an array"),
        ("args", {}, "args must be an array, not an object"),
        ("message_id", 12345, "message_id should be a valid string (found an integer)"),
        ("message_timestamp", "yesterday", "message_timestamp should be a valid integer (found a string)"),
    ],
)
def test_a_message_whose_envelope_has_a_wrong_type_is_undecodable_and_says_why(field, value, error) -> None:
    body = json.loads(dramatiq_body("provider.jobs"))
    body[field] = value
    record = dead_letter_from_delivery(
        json.dumps(body).encode(), {"x-death": REJECTED_ON}, source_queue="provider.jobs.XQ"
    )
    assert (record.category, record.error) == ("undecodable", f"body is not a Dramatiq message: {error}")


def test_a_body_nested_too_deeply_to_read_is_undecodable() -> None:
    record = dead_letter_from_delivery(b"[" * 100_000 + b"]" * 100_000, None, source_queue="q.XQ")
    assert (record.category, record.error) == ("undecodable", "body is JSON nested too deeply to read")


def test_a_message_rejected_on_a_queue_it_does_not_name_is_undecodable_and_says_so() -> None:
    body = dramatiq_body("other.queue")
    record = dead_letter_from_delivery(body, {"x-death": REJECTED_ON}, source_queue="provider.jobs.XQ")
    assert record.category == "undecodable"
    assert "queue_name 'other.queue' is not the queue it was delivered from ('provider.jobs')" in record.error


def test_a_valid_message_rejected_without_a_failure_names_its_actor_as_the_possible_cause() -> None:
    record = dead_letter_from_delivery(
        dramatiq_body("provider.jobs"), {"x-death": REJECTED_ON}, source_queue="provider.jobs.XQ"
    )
    assert (record.category, record.reason) == ("rejected", "rejected")
    assert record.error.startswith(
        "rejected in provider.jobs without a recorded failure: the worker knows no actor"
    )


def test_a_valid_message_published_straight_to_the_xq_says_so() -> None:
    record = dead_letter_from_delivery(dramatiq_body("provider.jobs"), None, source_queue="provider.jobs.XQ")
    assert (record.reason, record.error) == (
        "direct",
        "published straight to the dead-letter queue, without a recorded failure",
    )


def test_job_fields_of_any_json_type_are_kept_as_text_or_left_out() -> None:
    body = json.loads(dramatiq_body("provider.jobs", job_id={"a": 1}, operation=["create"]))
    body["kwargs"]["job"]["resource_type"] = 7
    body["kwargs"]["job"]["provider_namespace"] = "ITL.\ud800"
    record = dead_letter_from_delivery(json.dumps(body).encode(), None, source_queue="provider.jobs.XQ")
    assert (record.job_id, record.operation, record.resource_type) == (None, None, None)
    assert record.provider_namespace == "ITL.\\ud800"  # a lone surrogate no database takes, escaped


def test_a_death_time_beyond_any_date_is_not_taken_as_the_dead_letter_time() -> None:
    x_death = [{"count": 1, "reason": "rejected", "queue": "provider.jobs", "time": 2**62}]
    record = dead_letter_from_delivery(
        b"not json", {"x-death": x_death}, source_queue="provider.jobs.XQ", now_ms=1_700_000_000_000
    )
    assert record.dead_lettered_ms == 1_700_000_000_000


def test_a_dead_letter_field_of_the_wrong_type_is_pieced_together_and_the_rest_kept() -> None:
    body = json.loads(_enriched("job-9", "boom", "validation"))
    body["options"]["dead_letter"].update(attempts="3", dead_lettered_at_ms=True)
    record = dead_letter_from_delivery(json.dumps(body).encode(), {}, source_queue="provider.jobs.XQ")
    assert (record.category, record.error, record.max_retries) == ("validation", "boom", 2)
    assert record.attempts == 1  # from the attempt history
    assert record.dead_lettered_ms == record.archived_ms  # no x-death either: archived now
