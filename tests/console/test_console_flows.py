"""The console as an operator uses it after the demo: overview, records, a record replayed with an
edit, a group replayed after its dry run, a discard found in the audit log."""

from __future__ import annotations

import re
from typing import Any

from console_support import Demo, log_in
from playwright.sync_api import expect

from provider_jobs.dlq import DeadLetterArchive, Operations, RecordFilter, discard_records
from provider_jobs.settings import Settings

from support import wait_for


def test_overview_shows_the_demo_dead_letters_and_refreshes_itself(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive
) -> None:
    log_in(page, console_url, next_path="/ui/?every=1")
    expect(page.locator("#status-dead")).to_have_text("2")
    legend = page.locator(".legend")
    expect(legend).to_contain_text("validation: 1")
    expect(legend).to_contain_text("service_unavailable: 1")
    expect(page.locator("svg.chart rect")).to_have_count(2)
    expect(page.get_by_text(re.compile(r"Oldest awaiting action: record \d+"))).to_be_visible()
    expect(page.locator("#consumers")).to_have_text("1")
    # A change in the archive shows up without a reload.
    discard_records(archive, RecordFilter(ids=[worker.ids[0]]), who="bob", reason="seen elsewhere")
    expect(page.locator("#status-dead")).to_have_text("1")
    expect(page.locator("#status-discarded")).to_have_text("1")


def test_records_are_filtered_and_one_is_replayed_with_an_edit_that_makes_its_job_succeed(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive
) -> None:
    log_in(page, console_url, next_path="/ui/records")
    expect(page.locator("table.records tbody tr")).to_have_count(2)
    page.get_by_label("Category").fill("validation")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"category=validation"))
    rows = page.locator("table.records tbody tr")
    expect(rows).to_have_count(1)
    rows.get_by_role("link").first.click()
    expect(page.locator("#record-status")).to_have_text("dead")
    expect(page.locator("#record-error")).to_contain_text("missing required field 'name'")
    # An edit that breaks the job schema is refused next to its field, and nothing is sent.
    page.get_by_label(re.compile("Edit the request")).fill('{"name": "demo-rg-fixed"}')
    page.get_by_label(re.compile("Edit the job")).fill('{"priority": "urgent"}')
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.locator("#job_patch-error")).to_contain_text("priority")
    expect(page.locator("#job_patch")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#record-status")).to_have_text("dead")
    # Text that is not JSON is refused beside the request's edit.
    page.get_by_label(re.compile("Edit the job")).fill("")
    page.get_by_label(re.compile("Edit the request")).fill("{name: demo}")
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.locator("#patch-error")).to_contain_text("Not JSON")
    [record] = archive.find(RecordFilter(category="validation"))
    assert record.status == "dead"
    assert record.id is not None
    assert archive.audit(record_id=record.id) == [], "nothing was sent"
    page.get_by_label(re.compile("Edit the request")).fill('{"name": "demo-rg-fixed"}')
    page.get_by_label("Reason (optional)").fill("name was missing")
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.locator("#record-status")).to_have_text("replayed")
    expect(page.locator("table.audit")).to_contain_text("replay_edited")
    expect(page.locator("table.audit")).to_contain_text("alice")
    wait_for(lambda: "demo-rg-fixed" in worker.created_groups(), timeout_s=10)


def test_a_group_is_replayed_at_a_rate_after_its_dry_run(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive
) -> None:
    log_in(page, console_url, next_path="/ui/groups")
    page.get_by_role("row", name=re.compile("service_unavailable")).get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Group")
    page.get_by_role("link", name=re.compile("Preview the replay")).click()
    expect(page.locator("#dry-run-summary")).to_contain_text("1 of 1 would be sent")
    expect(page.locator("pre.json").first).to_contain_text('"provider_namespace": "ITL.Demo"')
    [record] = [r for r in archive.find(limit=10) if r.category == "service_unavailable"]
    assert record.status == "dead", "a dry run changes nothing"
    page.get_by_label(re.compile("Rate")).fill("5")
    page.get_by_label("Replay 1 record(s)").check()
    page.get_by_role("button", name="Replay 1 record(s)").click()
    expect(page.locator("#run-status")).to_contain_text("Replay finished: 1 published")
    assert record.id is not None
    assert archive.get(record.id).status == "replayed"
    [entry] = archive.audit(record_id=record.id, action="replay")
    assert entry.who == "alice"
    # The replay was stored as an operation, which its page follows.
    page.get_by_role("link", name=re.compile(r"operation \d+")).click()
    expect(page.locator("#operation-status")).to_contain_text("Operation finished: 1 of 1 settled, 1 sent")


def test_a_paused_operation_is_resumed_from_its_page_which_follows_its_progress(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive, settings: Settings
) -> None:
    operations = Operations(archive, broker_url=settings.broker_url)
    op_id = operations.start_replay(worker.ids, who="bob", selection={"ids": 2}, reason="fixed")
    operations.pause(op_id)
    log_in(page, console_url, next_path="/ui/operations")
    page.get_by_role("link", name=str(op_id), exact=True).click()
    expect(page.locator("#operation-status")).to_contain_text("Paused: 0 of 2 settled, 2 pending")
    page.get_by_role("button", name="Resume").click()
    # The page refreshes its progress by itself until the operation is done.
    expect(page.locator("#operation-status")).to_contain_text("Operation finished: 2 of 2 settled, 2 sent")
    assert {archive.get(record_id).status for record_id in worker.ids} == {"replayed"}
    refused = page.request.post(f"{console_url}/ui/operations/{op_id}/pause", form={"csrf": "x"})
    assert refused.status == 403


def test_a_record_discarded_with_a_reason_is_found_in_the_audit_page(
    page: Any, console_url: str, demo: Demo
) -> None:
    log_in(page, console_url, next_path=f"/ui/records/{demo.ids[0]}")
    page.get_by_label("Reason (written to the audit log)").fill("fixed upstream, ticket OPS-7")
    page.get_by_role("button", name="Discard").click()
    expect(page.locator("#record-status")).to_have_text("discarded")
    page.get_by_role("link", name="Audit", exact=True).click()
    page.get_by_label("Action").select_option("discard")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"action=discard"))
    row = page.locator("table.audit tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("fixed upstream, ticket OPS-7")
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text(str(demo.ids[0]))
