"""OpenSends: a send span ends by its publish's outcome, and one whose outcome never comes ends too."""

from __future__ import annotations

import time

from opentelemetry.trace import StatusCode

from provider_jobs.tracing.open_sends import OUTCOME_UNKNOWN, OpenSends

from support import wait_for


def _finished(exporter) -> dict[str, object]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_a_confirmed_send_ends_its_span_without_an_error(tracer_provider, exporter) -> None:
    sends = OpenSends()
    sends.open("m1", tracer_provider.get_tracer("t").start_span("send a"))
    sends.settle("m1")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert len(sends) == 0


def test_a_failed_send_ends_its_span_as_an_error_naming_why(tracer_provider, exporter) -> None:
    sends = OpenSends()
    sends.open("m1", tracer_provider.get_tracer("t").start_span("send a"))
    sends.settle("m1", ConnectionError("lost"))
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ConnectionError: lost"
    assert span.attributes["error.type"] == "ConnectionError"


def test_past_the_most_open_sends_the_oldest_ends_as_outcome_unknown(tracer_provider, exporter) -> None:
    tracer = tracer_provider.get_tracer("t")
    sends = OpenSends(max_open=2)
    for name in ("a", "b", "c"):
        sends.open(name, tracer.start_span(f"send {name}"))
    finished = _finished(exporter)
    assert list(finished) == ["send a"]
    assert finished["send a"].status.description == OUTCOME_UNKNOWN
    assert len(sends) == 2
    sends.settle("a")  # its outcome, too late: nothing more happens
    assert len(exporter.get_finished_spans()) == 1


def test_a_send_whose_outcome_never_comes_ends_as_outcome_unknown_after_the_wait(
    tracer_provider, exporter
) -> None:
    tracer = tracer_provider.get_tracer("t")
    sends = OpenSends(outcome_wait_s=0.02)
    sends.open("a", tracer.start_span("send a"))
    opened = time.monotonic()
    wait_for(lambda: time.monotonic() - opened > 0.02)
    sends.open("b", tracer.start_span("send b"))
    finished = _finished(exporter)
    assert list(finished) == ["send a"]
    assert finished["send a"].status.status_code is StatusCode.ERROR
    assert sends.get("b") is not None and sends.get("a") is None
