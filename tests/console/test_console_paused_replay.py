"""The console's group replay follows the provider's health: while its breaker is open the run
page says the provider is paused, and the replay finishes by itself once the breaker closes."""

from __future__ import annotations

import re
from typing import Any

from console_support import Demo, log_in
from playwright.sync_api import expect

from breaker_support import close_breaker, open_breaker, serving
from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.settings import Settings


def test_a_group_replay_shows_its_provider_paused_and_finishes_once_the_breaker_closes(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive, settings: Settings
) -> None:
    [record] = [r for r in archive.find(limit=10) if r.category == "service_unavailable"]
    assert record.id is not None
    with serving(settings, record.provider) as breakers:
        open_breaker(breakers, record.provider)
        log_in(page, console_url, next_path=f"/ui/groups/{record.fingerprint}/replay")
        page.get_by_label(re.compile("Rate")).fill("5")
        page.get_by_label("Replay 1 record(s)").check()
        page.get_by_role("button", name="Replay 1 record(s)").click()
        expect(page.locator("#run-paused")).to_contain_text(f"paused: {record.provider} down since ")
        expect(page.locator("#run-status")).to_contain_text("0 published")
        assert archive.get(record.id).status == "dead"
        close_breaker(breakers, record.provider)
        expect(page.locator("#run-status")).to_contain_text("Replay finished: 1 published")
        expect(page.locator("#run-paused")).to_have_count(0)
    assert archive.get(record.id).status == "replayed"
