"""A TracerProvider per test whose spans stay in memory (never OpenTelemetry's global one)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from provider_jobs.settings import Settings


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def settings(rabbitmq_url: str, queue_name: str, request: pytest.FixtureRequest) -> Settings:
    """The shared ``settings`` fixture's settings, breakers off whatever the setting is called."""
    names = {f.name for f in dataclasses.fields(Settings)}
    breakers_off = {name: 0 for name in ("breaker_threshold", "breaker_min_calls") if name in names}
    return Settings(
        broker_url=rabbitmq_url,
        queue_name=queue_name,
        queue_type=request.config.getoption("queue_type"),
        retry_delay_s=0.02,
        worker_threads=2,
        worker_timeout_ms=20,
        worker_id="test-worker",
        **breakers_off,
    )
