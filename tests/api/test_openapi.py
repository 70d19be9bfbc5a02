"""The served OpenAPI schema, and schemathesis checking every operation against it."""

from __future__ import annotations

from typing import Any

import schemathesis
from api_support import TOKEN
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from provider_jobs.api import create_app
from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.settings import Settings

#: Every operation the API documents.
OPERATIONS = {
    "GET /healthz",
    "GET /readyz",
    "GET /queue-stats",
    "GET /providers",
    "GET /metrics",
    "GET /dlq/records",
    "GET /dlq/records/{record_id}",
    "GET /dlq/groups",
    "POST /dlq/replay",
    "POST /dlq/discard",
    "GET /dlq/operations",
    "GET /dlq/operations/{operation_id}",
    "POST /dlq/operations",
    "POST /dlq/operations/{operation_id}/pause",
    "POST /dlq/operations/{operation_id}/resume",
    "POST /dlq/operations/{operation_id}/cancel",
    "POST /dlq/operations/{operation_id}/resolve",
}


def _check_every_operation(app: FastAPI, headers: dict[str, str]) -> set[str]:
    # Loaded here rather than with schemathesis' pytest plugin, whose lazy
    # fixture loading does not work with pytest 9.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked = set()
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers)

        answers_as_documented()
        checked.add(f"{operation.method.upper()} {operation.path}")
    return checked


def test_every_operation_answers_as_its_schema_says_without_a_token(
    settings: Settings, archive: DeadLetterArchive, amqp: Any
) -> None:
    checked = _check_every_operation(create_app(settings, archive=archive), {})

    assert checked == OPERATIONS


def test_every_operation_answers_as_its_schema_says_with_a_token_and_dead_letters(
    token_settings: Settings, archive: DeadLetterArchive, archived: list[int]
) -> None:
    app = create_app(token_settings, archive=archive)

    checked = _check_every_operation(app, {"Authorization": f"Bearer {TOKEN}"})

    assert checked == OPERATIONS
