"""Breakers shared between worker processes, with a real HTTP provider the test starts and stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.health import read_directory
from provider_jobs.middleware import ClassifiedRetries
from provider_jobs.providers import HttpProvider, ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, running_worker, wait_for

KEY = "ITL.Core/ResourceGroup"
RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}
CLI = str(Path(sys.executable).with_name("provider-jobs"))


class Provider:
    """A provider over HTTP: 503 while down, 200 once up; it records each request."""

    def __init__(self) -> None:
        self.down = True
        #: While set, answer 429 with this Retry-After (seconds) instead.
        self.retry_after: int | None = None
        self.requests: list[tuple[float, bool, str]] = []
        self.done: set[str] = set()
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                job_id = self.headers.get("X-Job-Id", "")
                with provider.lock:
                    retry_after, provider.retry_after = provider.retry_after, None
                    down = provider.down or retry_after is not None
                    provider.requests.append((time.monotonic(), down, job_id))
                    if not down:
                        provider.done.add(job_id)
                body = json.dumps({"error": "maintenance"} if down else {"ok": True}).encode()
                self.send_response(429 if retry_after is not None else 503 if down else 200)
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def requests_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t, _, _ in self.requests if start <= t < end)


@pytest.fixture
def provider() -> Iterator[Provider]:
    served = Provider()
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.replace(
        breaker_min_calls=3,
        breaker_probe_interval_s=0.3,
        providers_announce_s=0.5,
        max_attempts=2,
    )


def worker_process(
    settings: Settings, provider: Provider, worker_id: str, log: Any
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_PROVIDERS": f"{KEY}={provider.url}",
        "PROVIDER_JOBS_WORKER_ID": worker_id,
        "PROVIDER_JOBS_WORKER_THREADS": "2",
        "PROVIDER_JOBS_WORKER_TIMEOUT_MS": "20",
        "PROVIDER_JOBS_RETRY_DELAY_S": "0.02",
        "PROVIDER_JOBS_MAX_ATTEMPTS": str(settings.max_attempts),
        "PROVIDER_JOBS_BREAKER_MIN_CALLS": str(settings.breaker_min_calls),
        "PROVIDER_JOBS_BREAKER_PROBE_INTERVAL_S": str(settings.breaker_probe_interval_s),
        "PROVIDER_JOBS_PROVIDERS_ANNOUNCE_S": str(settings.providers_announce_s),
        "PROVIDER_JOBS_LOG_FORMAT": "json",
    }
    return subprocess.Popen([CLI, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)


def test_two_worker_processes_share_the_breaker_and_a_starting_worker_learns_it(
    fast, provider, amqp, queue_name, tmp_path
) -> None:
    producer = build_broker(fast)
    actors = declare_provider_actors(producer, None, fast)
    log = (tmp_path / "proc-b.log").open("wb")
    process = worker_process(fast, provider, "proc-b", log)
    try:
        wait_for(lambda: read_directory(fast, timeout_s=2)[0].entry(KEY).registered, timeout_s=20)
        jobs = [
            actors["create_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(10)
        ]
        wait_for(lambda: read_directory(fast, timeout_s=2)[0].entry(KEY).state != "closed", timeout_s=10)

        # A second worker, in this process, starts while the breaker is open: it learns it.
        registry = ProviderRegistry()
        registry.register("ITL.Core", "ResourceGroup", HttpProvider(provider.url))
        local = fast.replace(worker_id="proc-a")
        broker = build_broker(local)
        declare_provider_actors(broker, registry, local)
        breakers = next(m for m in broker.middleware if isinstance(m, ClassifiedRetries)).breakers
        with running_worker(broker):
            wait_for(lambda: breakers.state(KEY).state != "closed", timeout_s=5)
            start = time.monotonic()
            wait_for(lambda: time.monotonic() - start > 1.5, timeout_s=3)
            # Two processes, one probe round (3 jobs at most) per 0.3 s between them (a few ms of
            # slack at each hand-over).
            assert provider.requests_between(start, time.monotonic()) <= 3 * (1.5 / 0.3 + 3)
            provider.down = False
            wait_for(lambda: provider.done >= set(jobs), timeout_s=10)
            wait_for(lambda: breakers.state(KEY).state == "closed", timeout_s=5)
        assert queue_depth(amqp, f"{queue_name}.XQ") == 0

        result = subprocess.run(
            [CLI, "providers", "--json"],
            env={
                **os.environ,
                "PROVIDER_JOBS_BROKER_URL": fast.broker_url,
                "PROVIDER_JOBS_QUEUE_NAME": queue_name,
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        [entry] = json.loads(result.stdout)["providers"]
        assert (entry["provider"], entry["registered"], entry["state"]) == (KEY, True, "closed")
        assert "proc-b" in [w["worker"] for w in entry["workers"]]
        events = [h["event"] for h in entry["breaker"]["history"]]
        assert events[0] == "opened" and events[-1] == "closed"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        producer.close()


def test_an_http_providers_retry_after_holds_every_job_for_it(fast, provider, amqp, queue_name) -> None:
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", HttpProvider(provider.url))
    provider.down, provider.retry_after = False, 1
    broker = build_broker(fast)
    actors = declare_provider_actors(broker, registry, fast)
    with running_worker(broker):
        first = actors["get_resource"].send({**RG, "request": {"n": 0}}).options["job_id"]
        wait_for(lambda: provider.requests)
        refused_at = provider.requests[0][0]
        others = [
            actors["get_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(1, 6)
        ]
        wait_for(lambda: provider.done >= {first, *others}, timeout_s=10)
    later = [t for t, _, job in provider.requests if job in others]
    assert min(later) - refused_at >= 1.0
    assert len(provider.requests) == 7
    assert queue_depth(amqp, f"{queue_name}.XQ") == 0


def test_dead_letters_of_an_http_provider_are_replayed_when_its_breaker_closes(
    fast, provider, amqp, queue_name, tmp_path
) -> None:
    from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
    from provider_jobs.dlq.recovery import HEALTH_CATEGORIES, RecoveryReplay

    settings = fast.replace(
        max_attempts=1, archive_url=f"sqlite:///{tmp_path}/archive.sqlite3", recovery_replay_rate=100.0
    )
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", HttpProvider(provider.url))
    broker = build_broker(settings)
    actors = declare_provider_actors(broker, registry, settings)
    archive = DeadLetterArchive(settings.archive_url)
    recovery = RecoveryReplay(settings, archive, categories=HEALTH_CATEGORIES)
    recovery.start()
    try:
        with running_worker(broker, threads=1):
            jobs = [
                actors["create_resource"].send({**RG, "request": {"n": i}}).options["job_id"]
                for i in range(3)
            ]
            # One attempt each: two are dead-lettered (503) before the third failure opens the breaker.
            wait_for(lambda: queue_depth(amqp, f"{queue_name}.XQ") == 2)
            DeadLetterArchiver.from_settings(settings, archive=archive).run(until_idle=True)
            assert {r.category for r in archive.find(limit=10)} == {"service_unavailable"}
            provider.down = False
            wait_for(lambda: provider.done >= set(jobs), timeout_s=15)
        assert {r.status for r in archive.find(limit=10)} == {"replayed"}
        assert len(archive.audit(who="recovery", action="replay")) == 2
    finally:
        recovery.stop()
        archive.close()
