"""POST /dlq/replay follows the providers' health, on the private node: a provider whose breaker
is open gets nothing until it closes, the others go on, and the response lists the pause."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import TOKEN
from fastapi.testclient import TestClient

from breaker_support import DOWN, UP, close_breaker, published_providers, store_dead_letters
from breaker_support import outage as provider_outage
from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.settings import Settings

from support import queue_depth, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def outage(settings: Settings, amqp: Any, archive: DeadLetterArchive) -> Iterator[Any]:
    """Three dead letters of a provider whose breaker is open, two of one that is up."""
    store_dead_letters(archive, settings.queue_name, DOWN, 3)
    store_dead_letters(archive, settings.queue_name, UP, 2)
    with provider_outage(settings, amqp) as breakers:
        yield breakers


def test_a_replay_sends_the_up_provider_and_answers_once_the_down_one_recovered(
    token_client: TestClient, settings: Settings, amqp: Any, outage: Any
) -> None:
    answers: list[Any] = []
    request = threading.Thread(
        target=lambda: answers.append(
            token_client.post("/dlq/replay", json={"category": "service_unavailable"}, headers=AUTH)
        )
    )
    request.start()
    wait_for(lambda: queue_depth(amqp, settings.queue_name) == 2)
    assert request.is_alive() and published_providers(amqp, settings.queue_name) == [UP, UP]
    close_breaker(outage, DOWN)
    request.join(15)
    [answer] = answers
    assert answer.status_code == 200
    body = answer.json()
    assert body["published"] == 5
    [pause] = body["paused"]
    assert (pause["provider"], pause["reason"]) == (DOWN, "down")
    assert pause["description"].startswith(f"{DOWN} down since ")
    assert published_providers(amqp, settings.queue_name) == [DOWN] * 3


def test_max_pause_s_0_answers_at_once_and_leaves_the_down_provider_dead(
    token_client: TestClient, settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any
) -> None:
    body = token_client.post(
        "/dlq/replay", json={"category": "service_unavailable", "max_pause_s": 0}, headers=AUTH
    ).json()
    assert body["published"] == 2 and [p["provider"] for p in body["paused"]] == [DOWN]
    skipped = [o for o in body["outcomes"] if o["status"] == "skipped"]
    assert len(skipped) == 3 and all(o["detail"].startswith(f"paused: {DOWN}") for o in skipped)
    assert {archive.get(o["record_id"]).status for o in skipped} == {"dead"}


def test_ignore_breaker_sends_every_record_at_once(
    token_client: TestClient, settings: Settings, amqp: Any, outage: Any
) -> None:
    body = token_client.post(
        "/dlq/replay", json={"category": "service_unavailable", "ignore_breaker": True}, headers=AUTH
    ).json()
    assert (body["published"], body["paused"]) == (5, [])
    assert sorted(published_providers(amqp, settings.queue_name)) == [DOWN] * 3 + [UP] * 2


def test_an_operation_started_here_waits_for_the_breaker_and_can_be_paused_meanwhile(
    token_client: TestClient, settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any
) -> None:
    started = token_client.post(
        "/dlq/operations", json={"action": "replay", "category": "service_unavailable"}, headers=AUTH
    )
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]

    def state() -> dict[str, Any]:
        found: dict[str, Any] = token_client.get(f"/dlq/operations/{op_id}", headers=AUTH).json()
        return found

    wait_for(lambda: queue_depth(amqp, settings.queue_name) == 2)
    assert published_providers(amqp, settings.queue_name) == [UP, UP]
    assert state()["state"] == "running"
    assert token_client.post(f"/dlq/operations/{op_id}/pause", headers=AUTH).status_code == 200
    paused = wait_for(lambda: (found := state())["counts"].get("sending") is None and found, timeout_s=5)
    assert (paused["state"], paused["counts"]) == ("paused", {"sent": 2, "pending": 3})
    close_breaker(outage, DOWN)
    assert token_client.post(f"/dlq/operations/{op_id}/resume", headers=AUTH).status_code == 200
    done = wait_for(lambda: (found := state())["state"] == "done" and found, timeout_s=20)
    assert done["counts"] == {"sent": 5}
    assert published_providers(amqp, settings.queue_name) == [DOWN] * 3
