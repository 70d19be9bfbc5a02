"""The /dlq/operations endpoints on real dead letters: start in the background, follow, steer."""

from __future__ import annotations

from typing import Any

from api_support import DEAD_LETTERS, TOKEN
from fastapi.testclient import TestClient

from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.settings import Settings

from support import queue_depth, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _finished(client: TestClient, op_id: int) -> dict[str, Any]:
    def state() -> dict[str, Any] | None:
        found: dict[str, Any] = client.get(f"/dlq/operations/{op_id}", headers=AUTH).json()
        return found if found["state"] != "running" else None

    done: dict[str, Any] = wait_for(state, timeout_s=20)
    return done


def test_a_group_replay_runs_as_an_operation_in_the_background_and_is_followed(
    token_client: TestClient, archived: list[int], archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    group = next(
        g for g in token_client.get("/dlq/groups", headers=AUTH).json() if g["category"] == "timeout"
    )
    started = token_client.post(
        "/dlq/operations",
        json={"action": "replay", "group": group["fingerprint"], "reason": "fixed"},
        headers=AUTH,
    )
    assert started.status_code == 202, started.text
    op = started.json()
    assert (op["action"], op["who"], op["total"]) == ("replay", "api", DEAD_LETTERS.down)
    assert op["selection"] == {"statuses": ["dead"], "fingerprint": group["fingerprint"]}
    done = _finished(token_client, op["id"])
    assert (done["state"], done["counts"], done["records"]) == ("done", {"sent": DEAD_LETTERS.down}, [])
    assert queue_depth(amqp, settings.queue_name) == DEAD_LETTERS.down
    listed = token_client.get("/dlq/operations", headers=AUTH).json()
    assert [o["id"] for o in listed] == [op["id"]]
    # A done operation cannot be paused or resumed; an unknown one is 404.
    assert token_client.post(f"/dlq/operations/{op['id']}/pause", headers=AUTH).status_code == 409
    assert token_client.post(f"/dlq/operations/{op['id']}/resume", headers=AUTH).status_code == 409
    assert token_client.post("/dlq/operations/999/cancel", headers=AUTH).status_code == 404


def test_a_discard_operation_needs_a_reason_and_the_token(
    token_client: TestClient, archived: list[int], archive: DeadLetterArchive
) -> None:
    body = {"action": "discard", "category": "validation"}
    assert token_client.post("/dlq/operations", json=body).status_code == 401
    assert token_client.post("/dlq/operations", json=body, headers=AUTH).status_code == 422
    started = token_client.post("/dlq/operations", json={**body, "reason": "bad input"}, headers=AUTH)
    assert started.status_code == 202, started.text
    done = _finished(token_client, started.json()["id"])
    assert (done["state"], done["counts"]) == ("done", {"discarded": DEAD_LETTERS.permanent})
    assert archive.audit()[0].reason == "bad input"


def test_operations_are_refused_without_a_token_configured(client: TestClient, archived: list[int]) -> None:
    body = {"action": "discard", "category": "validation", "reason": "bad input"}
    assert client.post("/dlq/operations", json=body).status_code == 403
    assert client.get("/dlq/operations").json() == []
