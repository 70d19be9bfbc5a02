"""Real processes (submit, worker, archiver, replay) export over OTLP/HTTP to a receiver the test runs.

The receiver decodes the protobuf with ``opentelemetry-proto``. The worker's
provider is an HTTP provider served by the test too, so its calls are CLIENT
spans that carry ``traceparent`` across a real network hop.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from support import wait_for

PRODUCER, CONSUMER, CLIENT = (
    ProtoSpan.SPAN_KIND_PRODUCER,
    ProtoSpan.SPAN_KIND_CONSUMER,
    ProtoSpan.SPAN_KIND_CLIENT,
)


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


class _Handler(BaseHTTPRequestHandler):
    """``/v1/traces``: an OTLP/HTTP receiver. ``/operations/create``: the provider; a job named
    ``flaky`` answers 503 on its first call, one named ``invalid`` 400 on every call."""

    spans: list[dict[str, Any]]
    calls: dict[str, int]
    traceparents: list[str]
    lock: threading.Lock

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            self._traces(gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body)
        else:
            self._provider(json.loads(body))

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "service": resource.get("service.name"),
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex() or None,
                            "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        with self.lock:
            self.spans.extend(found)
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _provider(self, job: dict[str, Any]) -> None:
        name = job["request"]["name"]
        with self.lock:
            self.traceparents.append(self.headers.get("traceparent", ""))
            self.calls[name] = calls = self.calls.get(name, 0) + 1
        if name == "invalid" or (name == "flaky" and calls == 1):
            status = 400 if name == "invalid" else 503
            self._answer(status, json.dumps({"error": f"{name} {status}"}).encode(), "application/json")
        else:
            self._answer(200, json.dumps({"id": job["job_id"]}).encode(), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type(
        "Handler", (_Handler,), {"spans": [], "calls": {}, "traceparents": [], "lock": threading.Lock()}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def environment(settings, receiver, tmp_path: Path) -> dict[str, str]:
    url, _ = receiver
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PROVIDER_JOBS_", "OTEL_"))},
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_TYPE": settings.queue_type,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_ARCHIVE_URL": f"sqlite:///{tmp_path}/archive.sqlite3",
        "PROVIDER_JOBS_PROVIDERS": f"ITL.Test/Thing={url}",
        "PROVIDER_JOBS_RETRY_DELAY_S": "0.05",
        "PROVIDER_JOBS_HOLD_RETRIES_UP_TO_MS": "0",
        "PROVIDER_JOBS_BREAKER_MIN_CALLS": "0",
        "PROVIDER_JOBS_WORKER_TIMEOUT_MS": "50",
        "PROVIDER_JOBS_LOG_FORMAT": "json",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "provider_jobs", *args]


@pytest.fixture
def processes(environment: dict[str, str], tmp_path: Path) -> Iterator[None]:
    """A worker and an archiver, each its own process, stopped with SIGTERM afterwards."""
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("worker", "archiver")}
    running = [
        subprocess.Popen(_command(name), env=environment, stdout=subprocess.DEVNULL, stderr=log)
        for name, log in logs.items()
    ]
    yield
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for log in logs.values():
        log.close()


def _submit(environment: dict[str, str], name: str) -> str:
    done = subprocess.run(
        _command("submit", "ITL.Test/Thing", "create", "--request", json.dumps({"name": name})),
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def _trace(handler: type[_Handler], trace_id: str) -> list[dict[str, Any]]:
    with handler.lock:
        return [s for s in handler.spans if s["trace_id"] == trace_id]


def _wait_trace(handler: type[_Handler], trace_id: str, done: Any) -> list[dict[str, Any]]:
    """The spans of trace ``trace_id`` once ``done(spans)`` is true."""

    def check() -> list[dict[str, Any]] | None:
        spans = _trace(handler, trace_id)
        return spans if done(spans) else None

    return wait_for(check, timeout_s=30)


def _send_of(handler: type[_Handler], job_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        with handler.lock:
            return next(
                (
                    s
                    for s in handler.spans
                    if s["kind"] == PRODUCER and s["attributes"].get("provider_jobs.job_id") == job_id
                ),
                None,
            )

    return wait_for(find, timeout_s=30)


def test_traces_of_real_processes_go_over_otlp_and_link_a_replay_to_its_dead_job(
    environment, receiver, processes
) -> None:
    _, handler = receiver
    flaky = _send_of(handler, _submit(environment, "flaky"))
    assert flaky["service"] == "provider-jobs-submit" and flaky["parent"] is None
    trace = _wait_trace(
        handler, flaky["trace_id"], lambda t: len([s for s in t if s["kind"] == CONSUMER]) >= 2
    )
    process = sorted(
        (s for s in trace if s["kind"] == CONSUMER), key=lambda s: s["attributes"]["provider_jobs.attempt"]
    )
    assert [s["attributes"]["provider_jobs.outcome"] for s in process] == ["retry_scheduled", "succeeded"]
    assert {s["service"] for s in process} == {"provider-jobs-worker"}
    assert all(s["parent"] == flaky["span_id"] for s in process)
    clients = [s for s in trace if s["kind"] == CLIENT]
    assert len(clients) == 2 and {c["parent"] for c in clients} == {s["span_id"] for s in process}
    assert all(f"-{flaky['trace_id']}-" in tp for tp in handler.traceparents)

    invalid = _send_of(handler, _submit(environment, "invalid"))
    trace = _wait_trace(
        handler, invalid["trace_id"], lambda t: any(s["name"].startswith("archive ") for s in t)
    )
    [dead] = [s for s in trace if s["kind"] == CONSUMER and s["name"].startswith("process ")]
    [archived] = [s for s in trace if s["name"].startswith("archive ")]
    assert dead["attributes"]["provider_jobs.outcome"] == "dead_lettered"
    assert archived["service"] == "provider-jobs-archiver" and archived["parent"] == invalid["span_id"]

    subprocess.run(
        _command("dlq", "replay", "--all", "--reason", "e2e"),
        env=environment,
        check=True,
        timeout=60,
        capture_output=True,
    )

    def replay_send() -> dict[str, Any] | None:
        with handler.lock:
            return next((s for s in handler.spans if s["kind"] == PRODUCER and s["links"]), None)

    replay = wait_for(replay_send, timeout_s=30)
    assert replay["service"] == "provider-jobs-dlq" and replay["parent"] is None
    assert replay["trace_id"] != invalid["trace_id"]
    assert replay["links"] == [(invalid["trace_id"], invalid["span_id"])]
    replayed = wait_for(
        lambda: [s for s in _trace(handler, replay["trace_id"]) if s["kind"] == CONSUMER], timeout_s=30
    )
    assert replayed[0]["attributes"]["provider_jobs.job_id"] == invalid["attributes"]["provider_jobs.job_id"]
