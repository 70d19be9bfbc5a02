"""DeadLetterDetails: the one shape of ``options["dead_letter"]``, written by the retry middleware and the
worker's consumer and read by the archive, byte for byte as earlier versions wrote it."""

from __future__ import annotations

import dramatiq
import orjson

from provider_jobs.actors.delivery_counts import crash_loop_body
from provider_jobs.middleware import ErrorClassifier
from provider_jobs.middleware.dead_letter_details import DeadLetterDetails
from provider_jobs.middleware.dead_letters import stamp_dead_letter

#: ``options["dead_letter"]`` as ClassifiedRetries wrote it before the model, key for key.
OLD_RETRIES_LETTER = (
    b'{"reason":"exhausted","category":"service_unavailable","retryable":true,'
    b'"error_type":"ConnectionError","error":"backend busy","traceback":"Traceback ...\\nConnectionError",'
    b'"attempts":3,"max_retries":2,"worker_id":"w-1","queue_name":"provider.jobs",'
    b'"dead_lettered_at_ms":1700000000000}'
)
#: As the consumer wrote a crash_loop one before the model.
OLD_CRASH_LOOP_LETTER = (
    b'{"reason":"crash_loop","category":"crash_loop","retryable":false,"error_type":"WorkerCrashLoop",'
    b'"error":"The worker process died while running this job","traceback":null,"attempts":1,'
    b'"max_retries":null,"deliveries":4,"crashes":3,"worker_id":"w-2","queue_name":"provider.jobs",'
    b'"dead_lettered_at_ms":1700000000001}'
)


def test_an_old_dead_letter_reads_back_into_the_same_bytes() -> None:
    for old in (OLD_RETRIES_LETTER, OLD_CRASH_LOOP_LETTER):
        details = DeadLetterDetails.read(orjson.loads(old))
        assert details is not None
        assert orjson.dumps(details.as_option()) == old


def test_the_retry_middleware_writes_the_fields_in_the_order_it_always_did() -> None:
    message = dramatiq.MessageProxy(
        dramatiq.Message(queue_name="provider.jobs", actor_name="create", args=(), kwargs={}, options={})
    )
    error = ConnectionError("backend busy")
    stamp_dead_letter(
        message,
        classification=ErrorClassifier()(error),
        exception=error,
        reason="exhausted",
        retries=2,
        max_retries=2,
        worker_id="w-1",
    )
    written = message.options["dead_letter"]
    assert list(written) == list(orjson.loads(OLD_RETRIES_LETTER))
    assert DeadLetterDetails.read(written) == DeadLetterDetails(**written)
    assert (written["attempts"], written["worker_id"], written["error"]) == (3, "w-1", "backend busy")


def test_the_consumer_writes_a_crash_loop_letter_in_the_order_it_always_did() -> None:
    body = dramatiq.Message(
        queue_name="provider.jobs", actor_name="create", args=(), kwargs={}, options={"retries": 1}
    ).encode()
    written = orjson.loads(crash_loop_body(body, 4, 3, "w-2"))["options"]["dead_letter"]
    assert list(written) == list(orjson.loads(OLD_CRASH_LOOP_LETTER))
    assert (written["attempts"], written["deliveries"], written["crashes"]) == (2, 4, 3)
    assert written["worker_id"] == "w-2" and written["max_retries"] is None


def test_a_field_of_the_wrong_type_is_read_as_unset_and_the_others_are_kept() -> None:
    details = DeadLetterDetails.read(
        {"reason": "exhausted", "attempts": "3", "retryable": 1, "dead_lettered_at_ms": -5, "extra": []}
    )
    assert details == DeadLetterDetails(reason="exhausted")


def test_a_dead_letter_option_that_is_not_an_object_is_no_details() -> None:
    assert DeadLetterDetails.read(["exhausted"]) is None
    assert DeadLetterDetails.read(None) is None
