"""Log lines name the span that is active when they are written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from provider_jobs.log_config import configure_logging
from provider_jobs.tracing import add_trace_ids


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pika_level = logging.getLogger("pika").level
    yield
    root.handlers, root.level = handlers, level
    logging.getLogger("pika").setLevel(pika_level)
    structlog.reset_defaults()


def test_a_line_written_in_a_span_carries_its_trace_and_span_ids(
    capsys: pytest.CaptureFixture[str], restore_logging: None, tracer_provider
) -> None:
    configure_logging(log_format="json", level="INFO")
    with tracer_provider.get_tracer("test").start_as_current_span("work") as span:
        logging.getLogger("provider_jobs.test").info("inside")
    logging.getLogger("provider_jobs.test").info("outside")
    inside, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside and "span_id" not in outside


def test_a_line_outside_any_span_is_left_as_it_is() -> None:
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
