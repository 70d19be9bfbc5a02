"""Workload 8: a worker process's resident memory idle, under load and after many jobs.

Each variant runs in a fresh subprocess (``python -m benchmarks.rss VARIANT N``),
so that the harness's own memory is not counted.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import uuid

from . import workers


def rss_mb() -> float:
    """This process's current resident set size, in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(variant: str, n: int) -> dict[str, float]:
    """Run a worker on ``n`` no-op jobs and sample its memory (this process)."""
    logging.basicConfig(level=logging.CRITICAL)
    build, bodies = workers.VARIANTS[variant]
    queue = f"bench.rss.{uuid.uuid4().hex[:8]}"
    counter = workers.Counter()
    broker, actor = build(queue, lambda key: counter.add())
    worker = workers.dramatiq.Worker(
        broker, worker_threads=workers.THREADS, worker_timeout=workers.WORKER_TIMEOUT_MS
    )
    worker.start()
    try:
        counter_idle = threading.Event()
        counter_idle.wait(1.0)  # let the worker settle before the idle sample
        idle = rss_mb()
        peak = idle
        chunk = 5_000
        for start in range(0, n, chunk):
            workers._publish_raw(queue, bodies(actor, min(chunk, n - start)))
            peak = max(peak, rss_mb())
        while counter.count < n:
            counter.wait(min(n, counter.count + chunk))
            peak = max(peak, rss_mb())
        after = rss_mb()
    finally:
        worker.stop()
        broker.close()
        workers._delete_queues(queue)
    return {"idle": idle, "load": peak, "after": after}


def measure(variant: str, n: int) -> dict[str, float]:
    """Run :func:`child` in a fresh interpreter and return its samples."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.rss", variant, str(n)], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
