"""What the DLQ endpoints show and what they refuse: masked secrets, capped views,
the token before the body, the body cap, strict types, NUL, duplicate ids."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import TOKEN
from fastapi.testclient import TestClient

from provider_jobs.api import create_app
from provider_jobs.api.gate import RequestGate
from provider_jobs.dlq import DeadLetterArchive, dead_letter_from_delivery
from provider_jobs.settings import Settings

from support import queue_depth, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A request as a caller sends it, credentials and all.
SECRET_REQUEST = {
    "name": "rg-1",
    "password": "hunter2-pw",
    "Credentials": {"client_secret": "cs-value"},
    "nested": [{"X-Api-Key": "key-value"}],
    "dsn": "postgresql://app:dsn-password@db/app",
}
SECRETS = ("hunter2-pw", "cs-value", "key-value", "dsn-password", "tb-token")


def store(
    archive: DeadLetterArchive,
    queue_name: str,
    *,
    request: Any = None,
    error: str = "Validation error: missing required field 'name'",
    traceback: str | None = None,
    operation: str = "create",
) -> int:
    """Archive one dead letter of a create job with ``request``; its archive id."""
    body = json.dumps(
        {
            "queue_name": queue_name,
            "actor_name": f"{operation}_resource",
            "args": [],
            "kwargs": {
                "job": {
                    "job_id": uuid.uuid4().hex,
                    "provider_namespace": "ITL.Core",
                    "resource_type": "ResourceGroup",
                    "operation": operation,
                    "request": request if request is not None else {"name": "rg-1"},
                    "priority": 5,
                }
            },
            "options": {
                "dead_letter": {
                    "reason": "non_retryable",
                    "category": "validation",
                    "error": error,
                    "attempts": 1,
                    "dead_lettered_at_ms": int(time.time() * 1000),
                },
                **({"traceback": traceback} if traceback else {}),
            },
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
    ).encode()
    archive.store([dead_letter_from_delivery(body, {}, source_queue=f"{queue_name}.XQ")])
    return max(r.id for r in archive.find(limit=1) if r.id is not None)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture
def secret_record(archive: DeadLetterArchive, settings: Settings) -> int:
    return store(
        archive,
        settings.queue_name,
        request=SECRET_REQUEST,
        error="HTTP 401 from https://svc:url-pw@api.example/v1 with token=tb-token",
        traceback="Traceback...\nValueError: {'password': 'hunter2-pw'}",
    )


# -- 4: deep records ----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [600, 950])
def test_a_deeply_nested_record_is_listed_and_shown_capped(
    client: TestClient, archive: DeadLetterArchive, settings: Settings, depth: int
) -> None:
    record_id = store(archive, settings.queue_name, request=nested(depth))

    listed = client.get("/dlq/records")
    shown = client.get(f"/dlq/records/{record_id}")

    assert listed.status_code == 200 and shown.status_code == 200
    assert "nested deeper than 32 levels: not shown" in json.dumps(shown.json()["request"])
    assert listed.json()["records"][0]["id"] == record_id


def test_long_text_is_cut_and_says_so(
    client: TestClient, archive: DeadLetterArchive, settings: Settings
) -> None:
    record_id = store(archive, settings.queue_name, error="x" * 200_000)

    error = client.get(f"/dlq/records/{record_id}").json()["error"]

    assert len(error) < 70_000 and error.endswith("(134464 more characters not shown)")


# -- secrets ----------------------------------------------------------------------------------


def test_records_are_shown_with_their_secrets_masked(client: TestClient, secret_record: int) -> None:
    listed = client.get("/dlq/records").text
    shown = client.get(f"/dlq/records/{secret_record}")

    assert shown.status_code == 200
    for secret in (*SECRETS, "url-pw"):
        assert secret not in listed and secret not in shown.text, secret
    request = shown.json()["request"]
    assert request["password"] == "***" and request["Credentials"] == "***"
    assert request["nested"] == [{"X-Api-Key": "***"}] and request["name"] == "rg-1"
    assert request["dsn"] == "postgresql://app:***@db/app"


def test_reveal_shows_the_secrets_to_the_token_holder_and_is_audited(
    token_client: TestClient, archive: DeadLetterArchive, secret_record: int
) -> None:
    shown = token_client.get(f"/dlq/records/{secret_record}?reveal=true", headers=AUTH)

    assert shown.status_code == 200
    assert shown.json()["request"]["password"] == "hunter2-pw"
    assert [(e.action, e.record_id) for e in archive.audit()] == [("reveal", secret_record)]


def test_reveal_needs_the_mutation_token(
    client: TestClient, archive: DeadLetterArchive, secret_record: int
) -> None:
    refused = client.get(f"/dlq/records/{secret_record}?reveal=true")

    assert refused.status_code == 403
    assert "hunter2-pw" not in refused.text and archive.audit() == []


def test_a_validation_error_names_the_field_but_never_echoes_the_body(
    token_client: TestClient, secret_record: int
) -> None:
    response = token_client.post(
        "/dlq/replay",
        json={"ids": [secret_record], "force": "yes", "request_patch": {"password": "patch-secret"}},
        headers=AUTH,
    )

    assert response.status_code == 422
    assert "patch-secret" not in response.text and "yes" not in response.text
    assert response.json()["detail"][0]["loc"] == ["body", "force"]


# -- 7: the token before the body, and the body cap ---------------------------------------


def _counting_body(chunks: int, size: int, pulled: list[int]) -> Iterator[bytes]:
    for _ in range(chunks):
        pulled.append(size)
        yield b" " * size


def test_a_mutation_without_a_token_is_refused_before_its_body_is_read(token_client: TestClient) -> None:
    pulled: list[int] = []

    response = token_client.post("/dlq/replay", content=_counting_body(300, 1 << 20, pulled))

    assert response.status_code == 401
    assert pulled == []


def test_a_body_declared_over_the_cap_is_refused_with_413_unread(token_client: TestClient) -> None:
    response = token_client.post(
        "/dlq/replay",
        content=b"{" + b" " * (1 << 20) + b"}",
        headers={**AUTH, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert "PROVIDER_JOBS_API_MAX_BODY_BYTES" in response.json()["detail"]


def test_a_streamed_body_is_read_only_up_to_the_cap() -> None:
    received: list[int] = []
    sent: list[dict[str, Any]] = []
    reached_app: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached_app.append(True)

    async def receive() -> dict[str, Any]:
        received.append(64 * 1024)
        return {"type": "http.request", "body": b" " * 64 * 1024, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    gate = RequestGate(app, max_body_bytes=1 << 20, authorize=lambda authorization, path: None)
    scope = {"type": "http", "method": "POST", "path": "/dlq/replay", "headers": []}
    asyncio.run(gate(scope, receive, send))

    assert sent[0]["status"] == 413 and reached_app == []
    assert sum(received) == (1 << 20) + 64 * 1024


def test_the_body_cap_is_a_setting(
    token_settings: Settings, archive: DeadLetterArchive, secret_record: int
) -> None:
    settings = token_settings.replace(api_max_body_bytes=1024)
    with TestClient(create_app(settings, archive=archive)) as client:
        small = client.post("/dlq/replay", json={"ids": [secret_record], "dry_run": True}, headers=AUTH)
        large = client.post(
            "/dlq/replay", json={"ids": [secret_record], "reason": "x" * 1000, "dry_run": True}, headers=AUTH
        )

    assert small.status_code == 200 and large.status_code == 413


# -- 8: duplicate ids -----------------------------------------------------------------------


def test_an_id_named_three_times_is_published_once(
    token_client: TestClient, archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    record_id = store(archive, settings.queue_name)
    amqp.queue_declare(settings.queue_name, durable=True, arguments={"x-max-priority": 9})

    response = token_client.post("/dlq/replay", json={"ids": [record_id] * 3}, headers=AUTH)

    assert response.status_code == 200, response.text
    assert response.json()["published"] == 1 and len(response.json()["outcomes"]) == 1
    wait_for(lambda: queue_depth(amqp, settings.queue_name) >= 1, timeout_s=5)
    assert queue_depth(amqp, settings.queue_name) == 1


# -- 9, 10: text no archive stores, strict types ----------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/dlq/records?search=a%00b",
        "/dlq/records?category=%00",
        "/dlq/records?provider=ITL%00",
        "/dlq/groups?category=a%00",
    ],
)
def test_a_nul_in_a_filter_is_refused_with_422(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 422
    assert "NUL" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "fixed\x00"},
        {"reason": "lone \ud800 surrogate"},
        {"group": "g\x00"},
        {"ids": [1], "category": "\x00"},
    ],
    ids=["nul-reason", "surrogate-reason", "nul-group", "nul-category"],
)
def test_a_nul_in_a_replay_is_refused_before_anything_is_sent(
    token_client: TestClient, archive: DeadLetterArchive, secret_record: int, body: dict[str, Any]
) -> None:
    response = token_client.post(
        "/dlq/replay",
        # json.dumps escapes a lone surrogate, which httpx's own encoding refuses.
        content=json.dumps({"ids": [secret_record], **body}),
        headers={**AUTH, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert archive.get(secret_record).status == "dead"


@pytest.mark.parametrize(
    "body",
    [
        {"ids": [True]},
        {"ids": ["1"]},
        {"ids": [1.5]},
        {"ids": [1], "force": "yes"},
        {"ids": [1], "dry_run": 1},
        {"group": 5},
        {"ids": [1], "reason": 5},
    ],
    ids=["bool-id", "string-id", "fraction-id", "string-force", "int-dry-run", "int-group", "int-reason"],
)
def test_a_replay_takes_its_fields_strictly(
    token_client: TestClient, archive: DeadLetterArchive, secret_record: int, body: dict[str, Any]
) -> None:
    response = token_client.post("/dlq/replay", json=body, headers=AUTH)

    assert response.status_code == 422
    assert archive.get(secret_record).status == "dead"


def test_a_discard_takes_its_ids_strictly(
    token_client: TestClient, archive: DeadLetterArchive, secret_record: int
) -> None:
    response = token_client.post("/dlq/discard", json={"ids": [True], "reason": "noise"}, headers=AUTH)

    assert response.status_code == 422
    assert archive.get(secret_record).status == "dead"
