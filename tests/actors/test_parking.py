"""Jobs waiting for an open breaker are parked, untouched, and released paced once it closes:
on a real RabbitMQ node, through the provider-operation actors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pika
import pytest
import test_breaker_flow
from test_breaker_flow import KEY, RG, Flaky, breakers_of

from provider_jobs.actors.parking import ParkingKeeper, keeper_lease_name
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
from provider_jobs.middleware import ClassifiedRetries, Metrics
from provider_jobs.middleware.parking import PARKED_OPTION, parking_queue_name, released_body
from provider_jobs.settings import Settings

from support import depth_or_zero, queue_depth, running_worker, wait_for

#: The breaker flow's fixtures: a registry, and systems on a private queue with fast probes.
registry = test_breaker_flow.registry
make_system = test_breaker_flow.make_system


@pytest.fixture(autouse=True)
def _delete_parking_queue(amqp: Any, queue_name: str) -> Iterator[None]:
    yield
    if amqp.is_open:
        amqp.queue_delete(parking_queue_name(queue_name, KEY))


def parked_jobs(settings: Settings) -> int:
    """Jobs in the test provider's parking queue (0 before it is declared)."""
    return depth_or_zero(settings.broker_url, parking_queue_name(settings.queue_name, KEY))


def keeper_of(broker: dramatiq.Broker) -> ParkingKeeper:
    return next(m for m in broker.middleware if isinstance(m, ParkingKeeper))


def held_back(broker: dramatiq.Broker) -> float:
    """Times a worker of ``broker`` received a job and did not run it, its breaker being open."""
    metrics = next(m for m in broker.middleware if isinstance(m, Metrics))
    labels = {"provider": KEY, "operation": "create", "outcome": "breaker_wait"}
    return metrics.registry.get_sample_value("worker_job_duration_seconds_count", labels) or 0.0


def test_parked_jobs_stay_untouched_while_the_breaker_is_open(
    make_system, registry, amqp, queue_name, settings
) -> None:
    broker, actors = make_system()
    provider = Flaky()
    registry.register("ITL.Core", "ResourceGroup", provider)
    total = 200
    for i in range(total):
        actors["create_resource"].send({**RG, "request": {"n": i}})
    with running_worker(broker, threads=2):
        wait_for(lambda: queue_depth(amqp, queue_name) == 0 and parked_jobs(settings) >= total - 10)
        calls, seen, moved = provider.calls_while_down(), held_back(broker), keeper_of(broker).moved
        window_s = 2.0
        time.sleep(window_s)
        depth = parked_jobs(settings)
        extra_calls = provider.calls_while_down() - calls
        extra_seen = held_back(broker) - seen
        extra_moved = keeper_of(broker).moved - moved
        assert keeper_of(broker).is_keeper
    rounds = window_s / 0.2 + 2
    # Only probes move: at most 3 jobs a round, each taken out, called (or held back) and parked again.
    # In the delay queues every one of the 200 jobs would come back each round: 2,000 in 2 s.
    assert extra_moved <= 3 * rounds
    assert extra_calls + extra_seen <= 2 * 3 * rounds
    assert depth >= total - 10


def test_parked_jobs_are_released_paced_oldest_first_once_the_breaker_closes(
    make_system, registry, amqp, queue_name, settings
) -> None:
    broker, actors = make_system(breaker_release_rate=100.0)
    provider = Flaky()
    registry.register("ITL.Core", "ResourceGroup", provider)
    total = 100
    jobs = [
        actors["create_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(total)
    ]
    with running_worker(broker, threads=1):
        wait_for(lambda: queue_depth(amqp, queue_name) == 0 and parked_jobs(settings) >= total - 10)
        recovered = provider.up()
        wait_for(lambda: breakers_of(broker).state(KEY).state == "closed", timeout_s=5)
        closed = time.monotonic()
        wait_for(lambda: provider.done >= set(jobs), timeout_s=15)
        last_done = max(t for t, down, _ in provider.calls if not down)
    assert parked_jobs(settings) == 0
    assert queue_depth(amqp, f"{queue_name}.XQ") == 0
    # About 90 released at 100/s: not all at once, and not much slower.
    assert 0.6 <= last_done - closed <= 3.0, last_done - recovered
    # Released in the order they parked: the jobs sent first, except those that were probes.
    probes = {job for _, down, job in provider.calls if down}
    order = [jobs.index(job) for t, down, job in provider.calls if not down and t >= closed]
    released = [n for n in order if jobs[n] not in probes]
    assert released == sorted(released)


def test_a_released_job_keeps_its_priority_and_loses_its_parked_mark(
    make_system, registry, amqp, queue_name, settings
) -> None:
    if settings.queue_type == "quorum":
        pytest.skip("quorum queues have no x-max-priority")
    broker, actors = make_system()
    registry.register("ITL.Core", "ResourceGroup", Flaky())
    retries = next(m for m in broker.middleware if isinstance(m, ClassifiedRetries))
    assert retries.parking is not None
    broker.declare_queue(queue_name, ensure=True)
    for n, priority in enumerate([1, 9, 5]):
        message = actors["create_resource"].message_with_options(
            kwargs={"job": {**RG, "request": {"n": n}}}, broker_priority=priority
        )
        message = message.copy(options={**message.options, PARKED_OPTION: True})
        retries.parking.park(broker, dramatiq.broker.MessageProxy(message), KEY, 60_000)
    breakers_of(broker).record_success(KEY)  # known, and closed
    keeper = keeper_of(broker)
    keeper.after_worker_boot(broker, None)  # type: ignore[arg-type]
    try:
        wait_for(lambda: queue_depth(amqp, queue_name) == 3)
    finally:
        keeper.before_worker_shutdown(broker, None)  # type: ignore[arg-type]
    got = []
    while True:
        method, properties, body = amqp.basic_get(queue_name, auto_ack=True)
        if method is None:
            break
        got.append((properties.priority, dramatiq.Message.decode(body)))
    assert [priority for priority, _ in got] == [9, 5, 1]
    assert all(PARKED_OPTION not in message.options for _, message in got)


def test_a_job_parked_past_the_maximum_wait_is_archived_as_provider_down_without_running(
    make_system, registry, amqp, queue_name, settings, tmp_path
) -> None:
    broker, actors = make_system(breaker_max_wait_s=1.0, max_attempts=1000, breaker_probe_interval_s=30.0)
    provider = Flaky()
    registry.register("ITL.Core", "ResourceGroup", provider)
    jobs = [actors["delete_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(8)]
    with running_worker(broker, threads=1):
        wait_for(lambda: parked_jobs(settings) >= 5)
        wait_for(lambda: queue_depth(amqp, f"{queue_name}.XQ") == len(jobs), timeout_s=10)
        assert keeper_of(broker).moved == 0
    called = {job for _, _, job in provider.calls}
    assert len(called) < len(jobs)
    archived = settings.replace(archive_url=f"sqlite:///{tmp_path}/archive.sqlite3")
    archive = DeadLetterArchive(archived.archive_url)
    try:
        DeadLetterArchiver.from_settings(archived, archive=archive).run(until_idle=True)
        records = {r.job_id: r for r in archive.find(limit=100)}
    finally:
        archive.close()
    assert set(records) == set(jobs)
    for job in set(jobs) - called:
        assert (records[job].category, records[job].reason) == ("provider_down", "provider_down")
        assert records[job].attempts <= 1


def test_only_one_process_keeps_the_parking_queues(make_system, registry, queue_name, settings) -> None:
    first, _ = make_system()
    second, _ = make_system()
    registry.register("ITL.Core", "ResourceGroup", Flaky())
    for broker in (first, second):
        broker.declare_queue(queue_name, ensure=True)
    with running_worker(first, threads=1), running_worker(second, threads=1):
        wait_for(lambda: keeper_of(first).is_keeper or keeper_of(second).is_keeper)
        time.sleep(0.3)
        assert keeper_of(first).is_keeper != keeper_of(second).is_keeper
    # The lease is an exclusive queue: gone with the connection of the process that held it.
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            connection.channel().queue_declare(keeper_lease_name(queue_name), passive=True)
    finally:
        connection.close()


def test_a_released_body_loses_only_its_parked_mark_and_a_body_that_is_no_message_goes_as_it_is(
    make_system,
) -> None:
    make_system()  # sets the workers' encoder
    message = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={PARKED_OPTION: True, "retries": 2}
    )
    released = dramatiq.Message.decode(released_body(message.encode()))
    assert released.options == {"retries": 2}
    assert released.message_id == message.message_id
    assert released_body(b"not a message") == b"not a message"


def test_a_worker_stops_without_waiting_out_its_keepers_pause(make_system, registry) -> None:
    broker, _ = make_system(breaker_probe_interval_s=8.0)  # the keeper pauses a whole second a round
    keeper = keeper_of(broker)
    assert keeper.tick_s == 1.0
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=20)
    worker.start()
    try:
        wait_for(lambda: keeper.is_keeper, timeout_s=10)
        time.sleep(0.1)  # into the keeper's pause after its first round
    finally:
        started = time.monotonic()
        worker.stop()
        stopped_s = time.monotonic() - started
        broker.close()
    assert stopped_s < 0.5
