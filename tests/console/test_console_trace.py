"""A record's trace id in a real browser: shown, and a link to the trace with PROVIDER_JOBS_TRACE_URL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from console_support import log_in
from playwright.sync_api import expect

from provider_jobs.dlq import DeadLetterArchive, dead_letter_from_delivery
from provider_jobs.settings import Settings

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_URL = "https://tempo.example/trace/{trace_id}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(trace_url=TRACE_URL)


@pytest.fixture
def archive(settings: Settings) -> Iterator[DeadLetterArchive]:
    """An archive holding one dead letter of a traced job (instead of the demo's records)."""
    archive = DeadLetterArchive(settings.archive_url)
    options = {
        "dead_letter": {"reason": "non_retryable", "category": "validation"},
        "trace_context": {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
    }
    body = {
        "queue_name": settings.queue_name,
        "actor_name": "create_resource",
        "args": [],
        "kwargs": {},
        "options": options,
        "message_id": str(uuid.uuid4()),
        "message_timestamp": 1_700_000_000_000,
    }
    delivery = json.dumps(body).encode()
    archive.store([dead_letter_from_delivery(delivery, {}, source_queue=f"{settings.queue_name}.XQ")])
    yield archive
    archive.close()


def test_a_records_page_shows_its_trace_id_as_a_link_to_the_trace(
    page: Any, console_url: str, archive: DeadLetterArchive
) -> None:
    [record] = archive.find(limit=10)
    log_in(page, console_url, next_path=f"/ui/records/{record.id}")
    trace = page.locator("#record-trace")
    expect(trace).to_have_text(TRACE)
    link = trace.get_by_role("link", name=TRACE)
    expect(link).to_have_attribute("href", f"https://tempo.example/trace/{TRACE}")
