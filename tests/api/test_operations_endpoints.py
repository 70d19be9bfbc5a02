"""The /dlq/operations endpoints on real dead letters: start in the background, follow, steer."""

from __future__ import annotations

from typing import Any

from api_support import DEAD_LETTERS, TOKEN
from fastapi.testclient import TestClient

from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.dlq.operations import Operations
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


def test_uncertain_records_are_resolved_as_sent_or_not(
    token_client: TestClient, archived: list[int], archive: DeadLetterArchive, settings: Settings
) -> None:
    """An operation whose runner died holding claims on two records: a resume leaves them
    uncertain; the operator says one ran and the other was not sent."""
    ops = Operations(archive, broker_url=settings.broker_url)
    chosen = archived[:2]
    op_id = ops.start_replay(chosen, who="carol", selection={"ids": 2})
    archive.begin_sending(op_id, [0, 1])
    archive.claim_many(chosen)
    archive.set_operation_state(op_id, "running", runner="elsewhere:1")  # a runner long gone
    with archive._write("ageing the heartbeat") as conn:
        conn.execute(archive.tables.operations.update().values(heartbeat_ms=0))
    ops.take_over(op_id)
    assert {archive.get(i).status for i in chosen} == {"uncertain"}
    listed = token_client.get("/dlq/records", params={"status": "uncertain"}, headers=AUTH)
    assert sorted(r["id"] for r in listed.json()["records"]) == sorted(chosen), listed.text
    url = f"/dlq/operations/{op_id}/resolve"
    assert token_client.post(url, json={"sent": True}).status_code == 401
    assert token_client.post(url, json={}, headers=AUTH).status_code == 422
    ran = token_client.post(url, json={"sent": True, "record_ids": chosen[:1], "reason": "ran"}, headers=AUTH)
    assert ran.status_code == 200, ran.text
    assert ran.json()["resolved"] == chosen[:1]
    body = token_client.post(url, json={"sent": False}, headers=AUTH).json()
    assert body["resolved"] == chosen[1:]
    assert body["operation"]["counts"] == {"sent": 1, "skipped": 1}
    assert [archive.get(i).status for i in chosen] == ["replayed", "dead"]
    assert (
        token_client.post("/dlq/operations/999/resolve", json={"sent": True}, headers=AUTH).status_code == 404
    )


def test_a_configured_operator_names_the_mutations_of_both_dlq_routers(
    token_settings: Settings, archived: list[int], archive: DeadLetterArchive
) -> None:
    from provider_jobs.api import create_app

    with TestClient(create_app(token_settings.replace(operator="carol"), archive=archive)) as client:
        discarded = client.post("/dlq/discard", json={"ids": archived[:1], "reason": "bad"}, headers=AUTH)
        assert discarded.status_code == 200, discarded.text
        started = client.post(
            "/dlq/operations", json={"action": "discard", "ids": archived[1:2], "reason": "bad"}, headers=AUTH
        )
        assert started.status_code == 202, started.text
        listed = client.get("/dlq/operations", headers=AUTH).json()
    assert {o["who"] for o in listed} == {"carol"} and len(listed) == 2
    assert {entry.who for entry in archive.audit()} == {"carol"}
