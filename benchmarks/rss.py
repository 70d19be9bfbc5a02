"""Workload 8: a worker process's resident memory idle, under load and after many jobs.

Each variant's worker runs in a fresh subprocess (``python -m benchmarks.rss
VARIANT N``), so that neither the harness's memory nor the producer's counts:
the jobs are built and published by the harness, in chunks, while the worker
drains them. The worker samples its own RSS every 20 ms.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid

from . import workers

#: Jobs published per chunk; the worker drains each before the next is sent.
CHUNK = 5_000


def rss_mb() -> float:
    """This process's current resident set size, in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(variant: str, queue: str, n: int) -> None:
    """The worker process: drain ``n`` no-op jobs from ``queue``, printing its RSS samples as JSON lines."""
    logging.basicConfig(level=logging.CRITICAL)
    build, _ = workers.VARIANTS[variant]
    counter = workers.Counter()
    broker, _actor = build(queue, lambda key: counter.add())
    worker = workers.dramatiq.Worker(
        broker, worker_threads=workers.THREADS, worker_timeout=workers.WORKER_TIMEOUT_MS
    )
    worker.start()
    try:
        time.sleep(1.0)  # let the worker settle before the idle sample
        print(json.dumps({"idle": rss_mb()}), flush=True)
        peak = rss_mb()
        for chunk_end in range(CHUNK, n + CHUNK, CHUNK):
            done = min(chunk_end, n)
            while counter.count < done:
                peak = max(peak, rss_mb())
                time.sleep(0.02)
            print(json.dumps({"done": done}), flush=True)
        print(json.dumps({"load": peak, "after": rss_mb()}), flush=True)
    finally:
        worker.stop()
        broker.close()


def measure(variant: str, n: int) -> dict[str, float]:
    """Run a worker of ``variant`` in a fresh interpreter, feed it ``n`` jobs from here; its samples."""
    build, bodies = workers.VARIANTS[variant]
    queue = f"bench.rss.{uuid.uuid4().hex[:8]}"
    producer, actor = build(queue, lambda key: None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.rss", variant, queue, str(n)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        samples: dict[str, float] = dict(json.loads(proc.stdout.readline()))
        for start in range(0, n, CHUNK):
            workers._publish_raw(queue, bodies(actor, min(CHUNK, n - start)))
            json.loads(proc.stdout.readline())  # {"done": ...}
        samples.update(json.loads(proc.stdout.readline()))
        if proc.wait(timeout=60) != 0:
            raise RuntimeError(f"the {variant} worker process failed")
        return samples
    finally:
        if proc.poll() is None:
            proc.kill()
        producer.close()
        workers._delete_queues(queue)


def floor_child() -> None:
    """Print the RSS of an interpreter after importing, one by one, what a worker built on the
    libraries the issues chose cannot do without, and no provider-jobs code (JSON)."""
    steps: dict[str, float] = {}
    import dramatiq.brokers.rabbitmq  # noqa: F401

    steps["dramatiq + pika"] = rss_mb()
    import prometheus_client  # noqa: F401

    steps["+ prometheus-client"] = rss_mb()
    import structlog  # noqa: F401  (and rich, which structlog imports when it is installed)

    steps["+ structlog"] = rss_mb()
    import pydantic

    class Job(pydantic.BaseModel):  # the shape of provider_jobs.jobs.ProviderJob
        job_id: str = pydantic.Field(min_length=1, max_length=128)
        provider_namespace: str = pydantic.Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
        request: dict[str, object] = pydantic.Field(default_factory=dict)
        priority: int = pydantic.Field(default=5, ge=0, le=9)

    Job.model_validate({"job_id": "1", "provider_namespace": "ITL.Core"})
    steps["+ pydantic and one model"] = rss_mb()
    print(json.dumps(steps))


def floor() -> dict[str, float]:
    """:func:`floor_child` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.rss", "--floor"], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out))


if __name__ == "__main__":
    if sys.argv[1] == "--floor":
        floor_child()
    else:
        child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
