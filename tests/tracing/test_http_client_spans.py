"""An HTTP provider's call is a CLIENT span in the job's trace, and the provider gets ``traceparent``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from opentelemetry.trace import SpanKind

from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import HttpProvider


class Handler(BaseHTTPRequestHandler):
    """Answers every POST with ``{}``, keeping its headers."""

    headers_seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Handler.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.headers_seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


JOB = ProviderJob(
    provider_namespace="ITL.Core", resource_type="ResourceGroup", operation="create", request={"name": "rg"}
)


def test_a_call_inside_a_jobs_span_is_a_client_span_that_sends_its_traceparent(
    server, tracer_provider, exporter
) -> None:
    tracer = tracer_provider.get_tracer("test")
    with (
        HttpProvider(server, tracer_provider=tracer_provider) as provider,
        tracer.start_as_current_span("process provider.jobs") as job_span,
    ):
        provider.execute(JOB)
    [client] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert client.parent.span_id == job_span.get_span_context().span_id
    assert client.context.trace_id == job_span.get_span_context().trace_id
    [headers] = Handler.headers_seen
    context = client.context
    assert headers["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_without_tracing_a_call_sends_no_traceparent(server) -> None:
    with HttpProvider(server) as provider:
        provider.execute(JOB)
    [headers] = Handler.headers_seen
    assert "traceparent" not in headers
