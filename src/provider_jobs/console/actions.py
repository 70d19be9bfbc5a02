"""The console's actions: log in and out; replay (with an edit) and discard a record; replay or
discard a group after a preview of its count. Every form carries its session's CSRF token."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..dlq import DEAD, RecordFilter, Replayer, ReplayOutcome, discard_records, replay_records
from ..dlq.operations import describe_filter
from ..dlq.replay.gate import PauseHandler
from ..dlq.replay.message import unstorable
from ..errors import (
    ArchiveError,
    BrokerUnavailable,
    InvalidJob,
    NotReplayable,
    RecordConflict,
    RecordNotFound,
)
from ..health.watch import follow_breakers
from .context import CSRF_REFUSED, ConsoleContext, Form, Refused
from .pages import render_record
from .render import SECURITY_HEADERS
from .session import COOKIE, LOGIN_COOKIE, Operator, valid_name

__all__ = ["action_router"]

#: Replay pace the group form offers, and its bounds, in messages per second.
DEFAULT_RATE, MAX_RATE = 10.0, 1000.0
#: Why a patch that is JSON but not an object is refused.
_NOT_AN_OBJECT = 'A merge patch is a JSON object, e.g. {"name": "rg1"}'
#: Why a record that is not a dead letter awaiting action is not discarded.
_NOT_DEAD = "Not discarded: only a dead letter awaiting action can be."
#: Records the group preview's dry run plans (the oldest first): a bounded page whatever the group's size.
DRY_RUN_SAMPLE = 200
#: Planned messages the group preview shows.
PREVIEW = 5


def _reason(form: dict[str, str], *, required: bool) -> str | None:
    reason = form.get("reason", "").strip()
    if required and not reason:
        raise Refused(422, "A reason is required: it is written to the audit log.")
    if len(reason) > 1000 or unstorable(reason) is not None:
        raise Refused(422, "The reason must be at most 1000 characters, without NUL characters.")
    return reason or None


def _parse_patch(text: str) -> tuple[str | None, dict[str, Any] | None]:
    """A merge patch typed in a form: ``(problem, None)`` or ``(None, patch)``; empty is no patch."""
    if not text:
        return None, None
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        return f"Not JSON: {exc}", None
    if not isinstance(parsed, dict):
        return _NOT_AN_OBJECT, None
    return None, parsed


def _safe_next(target: str) -> str:
    """Only a console path is a place to go back to after login (never another site)."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


def action_router(console: ConsoleContext) -> APIRouter:  # noqa: PLR0915 - one closure per action
    """The POST routes of the console, and the login page."""
    router = APIRouter(prefix="/ui", include_in_schema=False)
    archive, pages, redactor, settings = console.archive, console.pages, console.redactor, console.settings
    sessions = console.sessions

    def login_page(
        request: Request,
        *,
        error: str | None = None,
        next_url: str = "/ui/",
        status_code: int = 200,
        name: str = "",
    ) -> HTMLResponse:
        nonce = secrets.token_urlsafe(24)
        response = pages.render(
            request,
            "login.html",
            None,
            status_code=status_code,
            error=error,
            next_url=_safe_next(next_url),
            csrf=nonce,
            ask_name=sessions.proxy_name(request.headers) is None,
            name=name if valid_name(name) else "",
            required=sessions.required,
        )
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", path="/ui/",
            secure=request.url.scheme == "https",
        )  # fmt: skip
        return response

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/ui/", name: str = "") -> HTMLResponse:
        # ``name`` fills the name in (the demo's login URL names its operator).
        return login_page(request, next_url=next, name=name)

    @router.post("/login", response_class=HTMLResponse)
    def login(request: Request, form: Form) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        given = form.get("csrf", "")
        if not nonce or not secrets.compare_digest(given.encode(), nonce.encode()):
            raise Refused(403, CSRF_REFUSED)
        next_url = form.get("next", "/ui/")
        if not sessions.required:
            return login_page(request, error="No token is configured: there is nothing to log in to.",
                              next_url=next_url, status_code=400)  # fmt: skip
        can_write = sessions.check_token(form.get("token", ""))
        if can_write is None:
            return login_page(request, error="That token is not valid.", next_url=next_url, status_code=401)
        who = sessions.proxy_name(request.headers) or form.get("name", "").strip()
        if not valid_name(who):
            return login_page(
                request,
                error="Your name is needed for the audit log: 1 to 100 printable characters.",
                next_url=next_url,
                status_code=422,
            )
        response = RedirectResponse(_safe_next(next_url), status_code=303)
        response.set_cookie(
            COOKIE, sessions.issue(who=who, can_write=can_write), max_age=sessions.max_age_s,
            httponly=True, samesite="strict", path="/ui/", secure=request.url.scheme == "https",
        )  # fmt: skip
        response.delete_cookie(LOGIN_COOKIE, path="/ui/")
        return response

    @router.post("/logout")
    def logout(request: Request, form: Form) -> Response:
        operator = console.operator(request)
        if operator.logged_in:
            if not secrets.compare_digest(form.get("csrf", "").encode(), operator.csrf.encode()):
                raise Refused(
                    403, "The form's CSRF token is missing or wrong: reload the page and try again."
                )
            sessions.end(operator)
        response = RedirectResponse("/ui/login", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/ui/")
        return response

    def record_error(
        request: Request, operator: Operator, record_id: int, code: int, **extra: Any
    ) -> Response:
        return render_record(console, request, operator, record_id, status_code=code, **extra)

    @router.post("/records/{record_id}/replay", response_class=HTMLResponse)
    def replay_record(request: Request, record_id: int, form: Form) -> Response:
        operator, who = console.writer(request, form)
        reason = _reason(form, required=False)
        texts = {field: form.get(field, "").strip() for field in ("patch", "job_patch")}
        kept = {**texts, "reason": reason or ""}
        patches: dict[str, dict[str, Any] | None] = {}
        for field, text in texts.items():
            problem, patches[field] = _parse_patch(text)
            if problem is not None:
                return record_error(request, operator, record_id, 422, errors={field: problem}, **kept)
        try:
            # A page does not wait out an outage: a record whose provider is down is not sent.
            with follow_breakers(settings, ignore=form.get("ignore_breaker") == "yes") as health:
                _, report = replay_records(
                    archive, broker_url=settings.broker_url, who=who, ids=[record_id],
                    request_patch=patches["patch"], job_patch=patches["job_patch"], reason=reason,
                    health=health, max_pause_s=0,
                )  # fmt: skip
        except RecordNotFound as exc:
            raise Refused(404, str(exc)) from None
        except (InvalidJob, NotReplayable) as exc:
            # Shown beside the job's edit when there is one (its fields are the schema's), else the request's.
            field = "job_patch" if patches["job_patch"] is not None else "patch"
            return record_error(
                request, operator, record_id, 422, errors={field: redactor.text(str(exc))}, **kept
            )
        except (BrokerUnavailable, ArchiveError) as exc:
            return record_error(request, operator, record_id, 503, notice=redactor.text(str(exc)), **kept)
        outcome = report.outcomes[0] if report.outcomes else None
        if outcome is None or outcome.status != "published":
            detail = redactor.text(outcome.detail or outcome.status) if outcome else "nothing was sent"
            return record_error(request, operator, record_id, 409, notice=f"Not replayed: {detail}", **kept)
        return RedirectResponse(f"/ui/records/{record_id}?done=replayed", status_code=303)

    @router.post("/records/{record_id}/discard", response_class=HTMLResponse)
    def discard_record(request: Request, record_id: int, form: Form) -> Response:
        operator, who = console.writer(request, form)
        reason = _reason(form, required=True)
        assert reason is not None
        try:
            changed = discard_records(archive, RecordFilter(ids=[record_id]), who=who, reason=reason)
        except RecordNotFound as exc:
            raise Refused(404, str(exc)) from None
        if not changed:
            return record_error(request, operator, record_id, 409,
                                notice=_NOT_DEAD)  # fmt: skip
        return RedirectResponse(f"/ui/records/{record_id}?done=discarded", status_code=303)

    def group_selection(fingerprint: str) -> RecordFilter:
        if not archive.groups(RecordFilter(fingerprint=fingerprint), limit=1):
            raise Refused(404, "No dead letters have this fingerprint")
        return RecordFilter(fingerprint=fingerprint, statuses=[DEAD])

    @router.get("/groups/{fingerprint}/replay", response_class=HTMLResponse)
    def group_replay_preview(request: Request, fingerprint: str) -> HTMLResponse:
        operator = console.operator(request)
        selection = group_selection(fingerprint)
        count = sum(g.count for g in archive.groups(selection))
        # The dry run plans the oldest records (those a replay sends first), at most a sample of them.
        sample = [r.id for r in archive.find(selection, limit=DRY_RUN_SAMPLE, oldest_first=True) if r.id]
        who = operator.who or "console"
        _, report = replay_records(archive, broker_url=settings.broker_url, who=who, ids=sample, dry_run=True)
        plans = Replayer(archive=archive, broker_url=settings.broker_url, who=who).plan(sample[:PREVIEW])
        return pages.render(
            request,
            "group_replay.html",
            operator,
            fingerprint=fingerprint,
            count=count,
            sampled=len(sample),
            would_publish=sum(1 for o in report.outcomes if o.status == "would_publish"),
            skipped=[redactor.view(o) for o in report.outcomes if o.status != "would_publish"][:PREVIEW],
            plans=[
                {
                    "record_id": p.record.id,
                    "message": redactor.view(p.message),
                    "skip_reason": redactor.text(p.skip_reason or ""),
                }
                for p in plans
            ],
            rate=DEFAULT_RATE,
            max_rate=MAX_RATE,
        )

    def confirmed(form: dict[str, str], count: int) -> None:
        if form.get("confirm") != "yes":
            raise Refused(422, "Tick the confirmation box: the action applies to every record counted.")
        if form.get("expected") != str(count):
            raise Refused(409, f"The group changed since you looked: it now has {count} dead letters "
                               "awaiting action. Go back, look again and confirm.")  # fmt: skip

    @router.post("/groups/{fingerprint}/replay", response_class=HTMLResponse)
    def group_replay(request: Request, fingerprint: str, form: Form) -> Response:
        _, who = console.writer(request, form)
        selection = group_selection(fingerprint)
        ids = archive.ids(selection)
        confirmed(form, len(ids))
        try:
            rate = float(form.get("rate", str(DEFAULT_RATE)))
        except ValueError:
            rate = -1.0
        if not 0 < rate <= MAX_RATE:
            raise Refused(422, f"rate: expected messages per second above 0 and at most {MAX_RATE:g}")
        reason = _reason(form, required=False)
        ignore_breaker = form.get("ignore_breaker") == "yes"

        # Stored as an operation: its progress outlives this process, and it can be paused and resumed.
        op_id = console.operations.start_replay(
            ids, who=who, selection=describe_filter(selection), reason=reason, rate_per_s=rate
        )

        def replay(on_outcome: Callable[[ReplayOutcome], None], on_pause: PauseHandler) -> None:
            with follow_breakers(settings, ignore=ignore_breaker) as health:
                stopped = console.operations.run(
                    op_id, on_outcome=on_outcome, health=health, on_pause=on_pause
                )
            if stopped.state != "done":
                # Paused or cancelled from the operation's page: the run says so, not "finished".
                raise RecordConflict(f"operation {op_id} is {stopped.state}; its page resumes it")

        run = console.runs.start(replay, total=len(ids), rate_per_s=rate, operation_id=op_id)
        return RedirectResponse(f"/ui/groups/{fingerprint}?run={run.id}", status_code=303)

    @router.post("/groups/{fingerprint}/discard", response_class=HTMLResponse)
    def group_discard(request: Request, fingerprint: str, form: Form) -> Response:
        _, who = console.writer(request, form)
        selection = group_selection(fingerprint)
        confirmed(form, archive.count(selection))
        reason = _reason(form, required=True)
        assert reason is not None
        changed = discard_records(archive, selection, who=who, reason=reason)
        return RedirectResponse(f"/ui/groups/{fingerprint}?discarded={len(changed)}", status_code=303)

    return router
