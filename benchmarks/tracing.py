"""Workload 1 with tracing: the success path with tracing off (as without the extra), on with every
job sampled and batch export over OTLP/HTTP to a local receiver, and on at a 10 % sample."""

from __future__ import annotations

import multiprocessing
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import workers
from .harness import Result, Variant, interleave

#: Variant name -> share of jobs sampled (None: tracing off, no TracerProvider at all).
VARIANTS: dict[str, float | None] = {
    "tracing off": None,
    "tracing on, all sampled, OTLP batch export": 1.0,
    "tracing on, 10 % sampled, OTLP batch export": 0.1,
}


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that reads each export and answers 200 (an empty response message)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(sock: socket.socket) -> None:
    server = ThreadingHTTPServer(sock.getsockname(), _Sink, bind_and_activate=False)
    server.socket = sock
    server.serve_forever()


@contextmanager
def local_receiver() -> Iterator[str]:
    """An OTLP/HTTP receiver in a process of its own (so that it takes no CPU from the worker's)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    process.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"
    finally:
        process.terminate()
        process.join()
        sock.close()


def _tracer_provider(endpoint: str, ratio: float) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(ratio)), resource=Resource.create({"service.name": "bench"})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def success_path(variant: str, n: int, endpoint: str) -> float:
    """Workload 1 (n no-op jobs, 1 process x 8 threads) with ``variant``'s tracing; messages per second.

    With tracing on, each job is stamped by the producer's side of the middleware (its send span
    and trace context, sampled or not as a producer would decide), before the timed drain.
    """
    ratio = VARIANTS[variant]
    provider = None if ratio is None else _tracer_provider(endpoint, ratio)
    queue = f"bench.tracing.{uuid.uuid4().hex[:8]}"
    counter = workers.Counter()
    broker, actor = workers._ours(queue, lambda key: counter.add(), tracer_provider=provider)
    bodies = []
    for _ in range(n):
        message = actor.message(provider_namespace="ITL.Bench", resource_type="Noop")
        if provider is not None:
            broker.emit_before("enqueue", message, None)
        bodies.append((message.encode(), message.options["broker_priority"]))
    if provider is not None:
        provider.force_flush()
    workers._publish_raw(queue, bodies)
    try:
        return workers._drain(broker, counter, n)
    finally:
        workers._delete_queues(queue)
        if provider is not None:
            provider.shutdown()


def workload(rounds: int, n: int) -> list[Result]:
    with local_receiver() as endpoint:
        return [
            interleave(
                "1 success path with tracing (no-op, 1 proc x 8 threads)",
                [Variant(name, lambda name=name: success_path(name, n, endpoint)) for name in VARIANTS],
                rounds=rounds,
                unit="msg/s",
                target="off: no cost",
            )
        ]
