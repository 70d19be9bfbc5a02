"""The DLQ endpoints on real dead letters archived by the real archiver."""

from __future__ import annotations

from typing import Any

from api_support import DEAD_LETTERS, TOKEN
from fastapi.testclient import TestClient

from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.settings import Settings

from support import queue_depth

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_records_are_paged_with_their_total(client: TestClient, archived: list[int]) -> None:
    page = client.get("/dlq/records", params={"limit": 2}).json()

    assert page["total"] == len(archived)
    assert len(page["records"]) == 2
    assert {r["id"] for r in page["records"]} <= set(archived)


def test_records_can_be_filtered_by_category(client: TestClient, archived: list[int]) -> None:
    validation = client.get("/dlq/records", params={"category": "validation"}).json()
    timeout = client.get("/dlq/records", params={"category": "timeout"}).json()

    assert validation["total"] == DEAD_LETTERS.permanent
    assert timeout["total"] == DEAD_LETTERS.down
    assert {r["reason"] for r in timeout["records"]} == {"exhausted"}


def test_one_record_shows_its_attempts_and_audit_log(client: TestClient, archived: list[int]) -> None:
    timeout = client.get("/dlq/records", params={"category": "timeout"}).json()["records"][0]

    record = client.get(f"/dlq/records/{timeout['id']}").json()

    assert record["attempts"] == 3
    assert [a["attempt"] for a in record["attempt_history"]] == [1, 2, 3]
    assert record["audit"] == []


def test_an_unknown_record_is_404(client: TestClient, archived: list[int]) -> None:
    response = client.get(f"/dlq/records/{max(archived) + 1000}")

    assert response.status_code == 404
    assert str(max(archived) + 1000) in response.json()["detail"]


def test_groups_count_dead_letters_by_cause(client: TestClient, archived: list[int]) -> None:
    groups = client.get("/dlq/groups").json()

    assert sorted((g["category"], g["count"]) for g in groups) == [
        ("timeout", DEAD_LETTERS.down),
        ("validation", DEAD_LETTERS.permanent),
    ]


def test_replay_sends_a_group_back_to_the_work_queue_once(
    token_client: TestClient, archived: list[int], archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    group = next(
        g for g in token_client.get("/dlq/groups", headers=AUTH).json() if g["category"] == "timeout"
    )

    body = {"group": group["fingerprint"], "reason": "fixed"}
    first = token_client.post("/dlq/replay", json=body, headers=AUTH)
    again = token_client.post("/dlq/replay", json={"group": group["fingerprint"]}, headers=AUTH)

    assert first.status_code == 200
    assert first.json()["published"] == DEAD_LETTERS.down
    assert again.json()["published"] == 0
    assert queue_depth(amqp, settings.queue_name) == DEAD_LETTERS.down
    statuses = {archive.get(o["record_id"]).status for o in first.json()["outcomes"]}
    assert statuses == {"replayed"}


def test_discard_marks_records_discarded_with_the_reason(
    token_client: TestClient, archived: list[int], archive: DeadLetterArchive
) -> None:
    response = token_client.post(
        "/dlq/discard", json={"category": "validation", "reason": "bad input, told the team"}, headers=AUTH
    )

    assert response.status_code == 200
    assert len(response.json()["discarded"]) == DEAD_LETTERS.permanent
    record = archive.get(response.json()["discarded"][0])
    assert (record.status, record.status_reason) == ("discarded", "bad input, told the team")


def test_discard_requires_a_reason(token_client: TestClient, archived: list[int]) -> None:
    response = token_client.post("/dlq/discard", json={"ids": archived[:1], "reason": " "}, headers=AUTH)

    assert response.status_code == 422


def test_queue_stats_count_the_archive_by_status_and_category(
    token_client: TestClient, archived: list[int]
) -> None:
    token_client.post("/dlq/discard", json={"ids": archived[:1], "reason": "noise"}, headers=AUTH)

    archive = token_client.get("/queue-stats").json()["archive"]

    assert archive["by_status"] == {"dead": len(archived) - 1, "replayed": 0, "discarded": 1, "uncertain": 0}
    assert sum(archive["awaiting_by_category"].values()) == len(archived) - 1
    assert archive["oldest_awaiting_ms"] is not None
    assert archive["oldest_awaiting_age_s"] >= 0


def test_metrics_show_dead_letters_awaiting_action_by_category(
    client: TestClient, archived: list[int]
) -> None:
    text = client.get("/metrics").text

    assert f'provider_jobs_dlq_awaiting_action{{category="validation"}} {DEAD_LETTERS.permanent}.0' in text
    assert f'provider_jobs_dlq_awaiting_action{{category="timeout"}} {DEAD_LETTERS.down}.0' in text
    assert 'provider_jobs_dlq_records{status="dead"} ' in text


def test_discard_leaves_records_already_replayed_alone(
    token_client: TestClient, archived: list[int], archive: DeadLetterArchive
) -> None:
    group = next(
        g for g in token_client.get("/dlq/groups", headers=AUTH).json() if g["category"] == "timeout"
    )
    replayed = token_client.post("/dlq/replay", json={"group": group["fingerprint"]}, headers=AUTH).json()

    response = token_client.post(
        "/dlq/discard", json={"category": "timeout", "reason": "noise"}, headers=AUTH
    )

    assert response.json()["discarded"] == []
    assert {archive.get(o["record_id"]).status for o in replayed["outcomes"]} == {"replayed"}
