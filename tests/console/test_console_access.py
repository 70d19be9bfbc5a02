"""Every console page passes axe-core without serious or critical violations, every action works
from the keyboard, and the README's screenshots are taken here."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import Demo, log_in
from playwright.sync_api import expect

from provider_jobs.dlq import DeadLetterArchive, RecordFilter

#: Set to a directory to keep the screenshots there (``make screenshots`` sets docs/console).
SCREENSHOTS_VARIABLE = "PROVIDER_JOBS_CONSOLE_SCREENSHOTS"


@pytest.fixture
def axe_page(browser: Any) -> Iterator[Any]:
    """A page whose CSP lets the test inject axe-core (the console's own pages forbid inline scripts)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def serious_violations(page: Any, axe_source: str) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each."""
    page.add_script_tag(content=axe_source)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_no_page_has_serious_or_critical_accessibility_violations(
    axe_page: Any, console_url: str, demo: Demo, axe_source: str, archive: DeadLetterArchive
) -> None:
    page = axe_page
    page.goto(f"{console_url}/ui/login")
    found = {"login": serious_violations(page, axe_source)}
    log_in(page, console_url)
    [group] = archive.groups(RecordFilter(category="validation"))
    paths = {
        "overview": "/ui/",
        "groups": "/ui/groups",
        "group": f"/ui/groups/{group.fingerprint}",
        "group replay preview": f"/ui/groups/{group.fingerprint}/replay",
        "records": "/ui/records",
        "record": f"/ui/records/{group.latest_id}",
        "audit": "/ui/audit",
    }
    for name, path in paths.items():
        page.goto(f"{console_url}{path}")
        found[name] = serious_violations(page, axe_source)
    # A form sent back with an error beside its field.
    page.goto(f"{console_url}/ui/records/{group.latest_id}")
    page.get_by_label("Edit the job (optional)", exact=False).fill("[1]")
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.locator("#job_patch-error")).to_be_visible()
    found["record with an error"] = serious_violations(page, axe_source)
    assert {name: problems for name, problems in found.items() if problems} == {}


def tab_to(page: Any, selector: str, *, limit: int = 120) -> None:
    """Press Tab until the element ``selector`` has the focus, as a keyboard user does."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} cannot be reached with Tab")


def test_every_action_works_from_the_keyboard(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive
) -> None:
    page.goto(f"{console_url}/ui/")
    expect(page).to_have_url(f"{console_url}/ui/login?next=/ui/")
    tab_to(page, "#name")
    page.keyboard.type("dave")
    page.keyboard.press("Tab")
    page.keyboard.type("console-t0ken")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Signed in as dave")).to_be_visible()
    # To a group through the menu and the table, then its replay: dry run, rate, confirm, send.
    tab_to(page, "nav a[href='/ui/groups']")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console_url}/ui/groups")
    [group] = archive.groups(RecordFilter(category="service_unavailable"))
    tab_to(page, f"table.groups a[href='/ui/groups/{group.fingerprint}']")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console_url}/ui/groups/{group.fingerprint}")
    tab_to(page, "a.button")
    page.keyboard.press("Enter")
    expect(page.locator("#dry-run-summary")).to_be_visible()
    tab_to(page, "#rate")
    page.keyboard.press("Control+A")
    page.keyboard.type("20")
    tab_to(page, "input[name=confirm]")
    page.keyboard.press("Space")
    tab_to(page, "form[action$='/replay'] button")
    page.keyboard.press("Enter")
    expect(page.locator("#run-status")).to_contain_text("Replay finished: 1 published")
    # A record: replay with an edit, from the keyboard.
    [record] = archive.find(RecordFilter(category="validation"))
    page.goto(f"{console_url}/ui/records/{record.id}")
    tab_to(page, "#patch")
    page.keyboard.type('{"name": "typed-rg"}')
    tab_to(page, "form[action$='/replay'] button")
    page.keyboard.press("Enter")
    expect(page.locator("#record-status")).to_have_text("replayed")
    # Log out.
    tab_to(page, "form.who button")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console_url}/ui/login")


def test_a_group_is_discarded_from_the_keyboard_after_confirming_its_count(
    page: Any, console_url: str, demo: Demo, archive: DeadLetterArchive
) -> None:
    [group] = archive.groups(RecordFilter(category="validation"))
    log_in(page, console_url, next_path=f"/ui/groups/{group.fingerprint}")
    tab_to(page, "#discard-reason")
    page.keyboard.type("bad input from a test client")
    page.keyboard.press("Enter")
    # The form asks for the confirmation first: nothing is discarded without it.
    assert archive.count(RecordFilter(fingerprint=group.fingerprint, statuses=["dead"])) == 1
    tab_to(page, "input[name=confirm]")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("1 record(s) discarded.")
    assert archive.count(RecordFilter(fingerprint=group.fingerprint, statuses=["discarded"])) == 1


def _a_day_of_history(archive: DeadLetterArchive) -> None:
    """Copies of the demo's dead letters spread over the last day, so that the chart has a shape."""
    originals = archive.find(limit=2)
    now_ms = int(time.time() * 1000)
    copies = []
    for n in range(60):
        original = originals[n % 2]
        at = now_ms - (n * 37 % 23 + 1) * 3_600_000 - n * 1000
        copies.append(
            dataclasses.replace(
                original, id=None, dedupe_key=f"history-{n}", dead_lettered_ms=at, archived_ms=at
            )
        )
    archive.store(copies)


def test_screenshots_of_the_overview_a_group_and_a_record(
    page: Any, console_url: str, worker: Demo, archive: DeadLetterArchive, tmp_path: Path
) -> None:
    keep = os.environ.get(SCREENSHOTS_VARIABLE)
    target = Path(keep) if keep else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    _a_day_of_history(archive)
    [group] = archive.groups(RecordFilter(category="service_unavailable"))
    log_in(page, console_url)
    expect(page.locator("svg.chart rect").first).to_be_visible()
    shots = {
        "console-overview.png": "/ui/",
        "console-group.png": f"/ui/groups/{group.fingerprint}",
        "console-record.png": f"/ui/records/{worker.ids[-1]}",
    }
    for name, path in shots.items():
        page.goto(f"{console_url}{path}")
        page.screenshot(path=str(target / name), full_page=True)
        assert (target / name).stat().st_size > 10_000, name
