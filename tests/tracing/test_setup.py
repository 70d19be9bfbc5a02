"""configure_tracing reads only the standard OTEL_* variables; with none set, tracing is off."""

from __future__ import annotations

import sys

import pytest

from provider_jobs.errors import ConfigurationError
from provider_jobs.tracing import active_provider, configure_tracing


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_SERVICE_NAME": "svc", "OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_without_an_exporter_tracing_is_off(environ: dict[str, str]) -> None:
    assert configure_tracing(service_name="test", environ=environ) is None


def test_an_exporter_not_known_is_one_line_naming_it() -> None:
    with pytest.raises(
        ConfigurationError, match=r"^OTEL_TRACES_EXPORTER='zipkin' is not allowed: expected otlp"
    ):
        configure_tracing(service_name="test", environ={"OTEL_TRACES_EXPORTER": "zipkin"})


def test_an_otlp_protocol_other_than_http_protobuf_is_one_line_naming_it() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(ConfigurationError, match=r"^OTEL_EXPORTER_OTLP_PROTOCOL='grpc' is not allowed"):
        configure_tracing(service_name="test", environ=environ)


def test_a_tracer_provider_the_application_gives_is_the_one_used(tracer_provider) -> None:
    assert active_provider(tracer_provider) is tracer_provider


def test_with_no_global_provider_set_tracing_is_off() -> None:
    assert active_provider() is None


def test_an_exporter_without_the_otel_extra_is_one_line_naming_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(ConfigurationError) as caught:
        configure_tracing(service_name="test", environ={"OTEL_TRACES_EXPORTER": "otlp"})
    assert str(caught.value) == (
        "OTEL_TRACES_EXPORTER='otlp' needs the otel extra: pip install 'provider-jobs[otel]'"
    )
