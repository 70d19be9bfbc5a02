"""An operation's page says which records its stopped process may have sent, and resolves them."""

from __future__ import annotations

from typing import Any

from console_support import Demo, log_in
from playwright.sync_api import expect

from provider_jobs.dlq import DeadLetterArchive, Operations
from provider_jobs.settings import Settings


def test_uncertain_records_are_resolved_from_the_operations_page(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive, settings: Settings
) -> None:
    operations = Operations(archive, broker_url=settings.broker_url)
    op_id = operations.start_replay(worker.ids, who="bob", selection={"ids": 2})
    # Its process died holding claims on both records: they may have been published.
    archive.begin_sending(op_id, [0, 1])
    archive.claim_many(worker.ids)
    archive.set_operation_state(op_id, "failed", error="killed")
    operations.take_over(op_id)
    operations.pause(op_id)
    log_in(page, console_url, next_path=f"/ui/operations/{op_id}")
    expect(page.locator("#operation-status")).to_contain_text("2 uncertain")
    page.get_by_role("button", name="They were not sent: make them dead letters again").click()
    expect(page.locator("#operation-status")).to_contain_text("2 skipped")
    expect(page.get_by_role("button", name="They were sent: mark them replayed")).to_have_count(0)
    assert {archive.get(record_id).status for record_id in worker.ids} == {"dead"}
    [entry, _] = archive.audit(action="resolve")
    assert (entry.who, entry.details) == ("alice", {"operation": op_id, "sent": False})
