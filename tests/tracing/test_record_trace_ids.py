"""A record shows its trace id and the trace it replays: the console's page (links when asked) and the API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from provider_jobs.api import create_app
from provider_jobs.dlq import DeadLetterArchive, dead_letter_from_delivery
from provider_jobs.settings import Settings

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ORIGINAL = "0af7651916cd43dd8448eb211c80319c"


def _carrier(trace_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[DeadLetterArchive]:
    archive = DeadLetterArchive(f"sqlite:///{tmp_path}/archive.sqlite3")
    yield archive
    archive.close()


def _record(archive: DeadLetterArchive, options: dict[str, Any]) -> int:
    body = {
        "queue_name": "provider.jobs",
        "actor_name": "create_resource",
        "args": [],
        "kwargs": {},
        "options": {"dead_letter": {"reason": "non_retryable", "category": "validation"}, **options},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": 1_700_000_000_000,
    }
    archive.store([dead_letter_from_delivery(json.dumps(body).encode(), {}, source_queue="provider.jobs.XQ")])
    return max(r.id for r in archive.find(limit=100))


def _page(settings: Settings, archive: DeadLetterArchive, record_id: int) -> str:
    with TestClient(create_app(settings, archive=archive)) as client:
        response = client.get(f"/ui/records/{record_id}")
    assert response.status_code == 200
    return response.text


def test_a_replayed_jobs_record_links_its_trace_and_the_one_it_replays(settings, archive) -> None:
    record_id = _record(
        archive, {"trace_context": _carrier(TRACE), "replay_of_trace_context": _carrier(ORIGINAL)}
    )
    settings = settings.replace(trace_url="https://tempo.example/trace/{trace_id}")
    page = _page(settings, archive, record_id)
    assert f'<a href="https://tempo.example/trace/{TRACE}"><code>{TRACE}</code></a>' in page
    assert f'<a href="https://tempo.example/trace/{ORIGINAL}"><code>{ORIGINAL}</code></a>' in page


def test_without_a_trace_url_the_trace_id_is_shown_as_text(settings, archive) -> None:
    record_id = _record(archive, {"trace_context": _carrier(TRACE)})
    page = _page(settings, archive, record_id)
    assert f"<code>{TRACE}</code>" in page and "tempo" not in page
    assert "replay of trace" not in page


def test_the_apis_record_view_names_both_trace_ids(settings, archive) -> None:
    record_id = _record(
        archive, {"trace_context": _carrier(TRACE), "replay_of_trace_context": _carrier(ORIGINAL)}
    )
    with TestClient(create_app(settings, archive=archive)) as client:
        record = client.get(f"/dlq/records/{record_id}").json()
    assert (record["trace_id"], record["replay_of_trace_id"]) == (TRACE, ORIGINAL)
