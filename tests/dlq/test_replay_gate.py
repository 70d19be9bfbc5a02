"""HealthGate: the batches a replay sends, a paused provider's records set aside until it resumes;
health from a BreakerWatch fed hand-made events (the stream itself is tested in tests/health)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from provider_jobs.dlq.replay.gate import HealthGate
from provider_jobs.dlq.replay.report import ReplayPlan
from provider_jobs.health import BreakerWatch

DOWN, UP = "ITL.Core/ResourceGroup", "ITL.Core/VirtualMachine"


@dataclass
class Record:
    id: int
    job_id: str = "job"


def plan(record_id: int, provider: str) -> ReplayPlan[Any]:
    namespace, _, resource_type = provider.partition("/")
    job = {"provider_namespace": namespace, "resource_type": resource_type}
    return ReplayPlan(record=Record(record_id), message={"kwargs": {"job": job}})


def health(*, down: bool) -> BreakerWatch:
    watch = BreakerWatch()
    now = time.time()
    watch.fold({"type": "announce", "worker": "w", "at": now, "interval_s": 60, "providers": [DOWN, UP]})
    if down:
        set_breaker(watch, "open")
    return watch


def set_breaker(watch: BreakerWatch, state: str) -> None:
    now = time.time()
    data = {"key": DOWN, "state": state, "opened_at": now, "updated_at": now}
    watch.fold({"type": "breaker", "event": state, "state": data})


def ids(batch: list[ReplayPlan[Any]]) -> list[int]:
    return [p.record.id for p in batch]


def test_without_health_every_plan_goes_in_batches_of_its_size() -> None:
    gate = HealthGate([plan(n, DOWN) for n in range(5)], size=2)
    assert [ids(gate.next_batch()) for _ in range(4)] == [[0, 1], [2, 3], [4], []]
    assert not gate.holding


def test_a_paused_provider_is_held_back_and_goes_again_in_its_place_once_it_resumes() -> None:
    watch = health(down=True)
    told: list[tuple[str, bool]] = []
    plans = [plan(1, DOWN), plan(2, UP), plan(3, DOWN), plan(4, UP), plan(5, UP)]
    gate = HealthGate(plans, size=2, health=watch, on_pause=lambda key, p: told.append((key, p is not None)))
    assert ids(gate.next_batch()) == [2, 4]
    assert told == [(DOWN, True)] and gate.holding
    set_breaker(watch, "closed")
    assert ids(gate.next_batch()) == [1, 3]
    assert ids(gate.next_batch()) == [5]
    assert told == [(DOWN, True), (DOWN, False)] and not gate.holding
    assert [p.provider for p in gate.pauses] == [DOWN]


def test_held_plans_are_given_up_after_max_pause_s() -> None:
    gate = HealthGate([plan(1, DOWN), plan(2, UP)], size=10, health=health(down=True), max_pause_s=0)
    assert ids(gate.next_batch()) == [2]
    gate.wait()
    assert not gate.holding
    assert [(p.record.id, pause.provider) for p, pause in gate.given_up] == [(1, DOWN)]


def test_a_plan_that_sends_no_job_is_never_held() -> None:
    skipped = ReplayPlan(record=Record(7), message=None, skip_reason="not replayable")
    gate = HealthGate([skipped, plan(8, DOWN)], size=10, health=health(down=True))
    assert ids(gate.next_batch()) == [7]
