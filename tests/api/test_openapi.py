"""The served OpenAPI schema, and schemathesis checking every operation against it."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from provider_jobs.api import create_app
from provider_jobs.settings import Settings


def test_every_operation_answers_as_its_schema_says(settings: Settings, amqp: Any) -> None:
    # Loaded here rather than with schemathesis' pytest plugin, whose lazy
    # fixture loading does not work with pytest 9.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    operations = [result.ok() for result in schema.get_all_operations()]
    checked = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: schemathesis.Case) -> None:
            case.call_and_validate()

        answers_as_documented()
        checked.append(f"{operation.method.upper()} {operation.path}")

    assert {"GET /queue-stats", "GET /metrics", "GET /healthz", "GET /readyz"} <= set(checked)
