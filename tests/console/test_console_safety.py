"""The console's safety: login and logout, sessions that end, CSRF tokens, escaped stored text,
read-only without a token, and the headers that forbid inline scripts."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from console_support import READ_TOKEN, TOKEN, Demo, log_in
from playwright.sync_api import expect

from provider_jobs.dlq import DeadLetterArchive


def test_pages_need_a_login_which_goes_back_to_the_page_asked_for(
    page: Any, console_url: str, demo: Demo
) -> None:
    page.goto(f"{console_url}/ui/records?category=validation")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("Your name").fill("alice")
    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    page.get_by_label("Your name").fill("alice")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{console_url}/ui/records?category=validation")
    expect(page.get_by_text("Signed in as alice")).to_be_visible()
    [cookie] = [c for c in page.context.cookies() if c["name"] == "pj_console"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["expires"] > 0, "the session expires"


def test_a_login_url_with_the_token_in_its_fragment_logs_in_under_its_name(
    page: Any, console_url: str, demo: Demo
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{console_url}/ui/login?name=demo#token={TOKEN}")
    expect(page).to_have_url(f"{console_url}/ui/")
    expect(page.get_by_text("Signed in as demo")).to_be_visible()
    # The fragment is never sent, so the token is in no request line or access log.
    assert requested and not any(TOKEN in url for url in requested)


def test_logging_out_ends_the_session_even_for_a_copy_of_its_cookie(
    page: Any, console_url: str, demo: Demo
) -> None:
    log_in(page, console_url)
    [cookie] = [c for c in page.context.cookies() if c["name"] == "pj_console"]
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{console_url}/ui/login")
    page.goto(f"{console_url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.context.add_cookies([cookie])
    page.goto(f"{console_url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_a_forged_session_cookie_is_refused(page: Any, console_url: str, demo: Demo) -> None:
    page.context.add_cookies(
        [{"name": "pj_console", "value": "eyJ3aG8iOiJldmUiLCJ3Ijp0cnVlfQ.forged.sig", "url": console_url}]
    )
    page.goto(f"{console_url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_a_form_post_without_its_csrf_token_is_refused(
    page: Any, console_url: str, demo: Demo, archive: DeadLetterArchive
) -> None:
    log_in(page, console_url)
    record_id = demo.ids[0]
    for form in ({"reason": "no token"}, {"reason": "wrong token", "csrf": "guessed"}):
        response = page.request.post(f"{console_url}/ui/records/{record_id}/discard", form=form)
        assert response.status == 403
        assert "CSRF" in response.text()
    response = page.request.post(
        f"{console_url}/ui/records/{record_id}/replay", form={"patch": '{"name": "x"}'}
    )
    assert response.status == 403
    assert archive.get(record_id).status == "dead"
    assert archive.audit(record_id=record_id) == []


def test_the_read_only_token_shows_pages_and_refuses_actions(
    page: Any, console_url: str, demo: Demo, archive: DeadLetterArchive
) -> None:
    log_in(page, console_url, name="carol", token=READ_TOKEN, next_path=f"/ui/records/{demo.ids[0]}")
    expect(page.get_by_role("note")).to_contain_text("read-only token")
    expect(page.get_by_role("button", name="Discard")).to_have_count(0)
    csrf = page.locator("form.who input[name=csrf]").input_value()
    response = page.request.post(
        f"{console_url}/ui/records/{demo.ids[0]}/discard", form={"reason": "x", "csrf": csrf}
    )
    assert response.status == 403
    assert archive.get(demo.ids[0]).status == "dead"


def test_without_a_token_the_console_is_read_only_and_says_why(
    page: Any, open_console_url: str, demo: Demo, archive: DeadLetterArchive
) -> None:
    page.goto(f"{open_console_url}/ui/records/{demo.ids[0]}")
    expect(page.get_by_role("note")).to_contain_text(
        "No API token is configured (set PROVIDER_JOBS_API_TOKEN)"
    )
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    response = page.request.post(f"{open_console_url}/ui/records/{demo.ids[0]}/discard", form={"reason": "x"})
    assert response.status == 403
    assert archive.get(demo.ids[0]).status == "dead"


def test_stored_markup_is_shown_as_text_and_inline_scripts_are_forbidden(
    page: Any, console_url: str, demo: Demo, archive: DeadLetterArchive
) -> None:
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    [original] = archive.find(limit=1)
    archive.store(
        [
            dataclasses.replace(
                original, id=None, dedupe_key="hostile", error=hostile, request={"name": hostile}
            )
        ]
    )
    [stored] = archive.find(limit=1)
    log_in(page, console_url, next_path=f"/ui/records/{stored.id}")
    expect(page.locator("#record-error")).to_have_text(hostile)
    expect(page.locator("#record-request")).to_contain_text("<script>window.pwned = 1</script>")
    page.goto(f"{console_url}/ui/records")
    expect(page.locator("table.records")).to_contain_text("<script>window.pwned = 1</script>")
    page.goto(f"{console_url}/ui/groups")
    expect(page.locator("table.groups")).to_contain_text("<script>")
    assert page.evaluate("window.pwned") is None
    response = page.request.get(f"{console_url}/ui/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy


def test_secret_values_in_a_request_are_masked(
    page: Any, console_url: str, demo: Demo, archive: DeadLetterArchive
) -> None:
    [original] = archive.find(limit=1)
    archive.store(
        [
            dataclasses.replace(
                original,
                id=None,
                dedupe_key="secret",
                request={
                    "name": "orders",
                    "admin_password": "s3cr3t-pw",
                    "url": "postgresql://app:db-pw@db/x",
                },
                error="Validation error: password='s3cr3t-pw' is too short",
            )
        ]
    )
    [stored] = archive.find(limit=1)
    log_in(page, console_url, next_path=f"/ui/records/{stored.id}")
    expect(page.locator("#record-request")).to_contain_text('"admin_password": "***"')
    expect(page.locator("#record-request")).to_contain_text("postgresql://app:***@db/x")
    assert "s3cr3t-pw" not in page.content()
    assert "db-pw" not in page.content()


def test_behind_a_proxy_the_audit_name_is_the_proxys_and_not_asked(
    browser: Any, proxy_console_url: str, demo: Demo, archive: DeadLetterArchive
) -> None:
    context = browser.new_context(extra_http_headers={"X-Forwarded-User": "erin@example.org"})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto(f"{proxy_console_url}/ui/records/{demo.ids[0]}")
        expect(page.get_by_label("API token")).to_be_visible()
        expect(page.get_by_label("Your name")).to_have_count(0)
        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Signed in as erin@example.org")).to_be_visible()
        page.get_by_label("Reason (written to the audit log)").fill("duplicate")
        page.get_by_role("button", name="Discard").click()
        expect(page.locator("#record-status")).to_have_text("discarded")
        [entry] = archive.audit(record_id=demo.ids[0])
        assert entry.who == "erin@example.org"
    finally:
        context.close()
