"""The console's pages: overview, groups, records, one record, the audit log."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from prometheus_client import REGISTRY

from ..dlq import DEAD, STATUSES, DeadLetter, DeadLetterArchive, RecordFilter
from ..dlq.archive.groups import GroupSummary
from ..dlq.summary import summarise_archive
from ..errors import ArchiveError, BrokerUnavailable, RecordNotFound
from ..middleware.metrics import metrics_registry, multiprocess_dir
from ..rabbitmq.queue_stats import QueueStat, read_queue_stats
from ..tracing import trace_ids
from .chart import WINDOWS, HourlyCounts, hourly_chart
from .context import ConsoleContext, Refused
from .session import Operator

__all__ = ["page_router", "render_record"]

#: Records per page of the records list.
PAGE_SIZE = 50
#: Groups read for the groups table, which sorts them all.
MAX_GROUPS = 100_000
#: Groups shown, after sorting.
GROUPS_SHOWN = 200
#: Beyond this many matches, a filtered records page says "more than" instead of counting on.
COUNT_CAP = 10_000
#: Audit entries per page.
AUDIT_LIMIT = 200
#: How often the overview refreshes itself by default, in seconds (``?every=`` changes it).
REFRESH_S = 5
#: Columns the groups table sorts by, and how.
_GROUP_SORTS: dict[str, Any] = {
    "count": lambda g: g.count,
    "first_seen": lambda g: g.first_seen_ms,
    "last_seen": lambda g: g.last_seen_ms,
    "category": lambda g: g.category,
    "provider": lambda g: f"{g.provider_namespace or ''}/{g.resource_type or ''}",
    "operation": lambda g: g.operation or "",
}
#: The fields of a record the records list shows.
_LIST_FIELDS = ("id", "dead_lettered_ms", "status", "job_id", "operation", "category", "attempts", "error")
Text = Annotated[str | None, Query(max_length=1000)]


def _blank(value: str | None) -> str | None:
    """A query field left empty counts as not given."""
    if value is None:
        return None
    value = value.strip()
    if "\x00" in value:
        raise Refused(422, "A filter must not contain a NUL character")
    return value or None


def _parse_time(value: str | None, name: str) -> int | None:
    """A ``datetime-local`` field (``YYYY-MM-DDTHH:MM``, UTC) as ms since the epoch."""
    value = _blank(value)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(422, f"{name}: expected a time as YYYY-MM-DDTHH:MM (UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def newest_page(
    archive: DeadLetterArchive, record_filter: RecordFilter, *, limit: int, before: tuple[int, int] | None
) -> list[DeadLetter]:
    """A page of records newest first; without a status filter, one query per status, merged.

    Every page index starts with (or holds) the status and ends in the page's order, so a
    query per status reads only its page's index entries, where one query over all statuses
    would sort every match.
    """
    if record_filter.statuses:
        return archive.find(record_filter, limit=limit, before=before)
    found: list[DeadLetter] = []
    for status in STATUSES:
        found += archive.find(
            dataclasses.replace(record_filter, statuses=[status]), limit=limit, before=before
        )
    found.sort(key=lambda r: (r.dead_lettered_ms, r.id or 0), reverse=True)
    return found[:limit]


def count_matches(archive: DeadLetterArchive, record_filter: RecordFilter) -> tuple[int, bool]:
    """How many records match, and whether that is exact: from the group summary when the filter
    is one it keeps, else counted up to :data:`COUNT_CAP`."""
    only_totals = {"statuses", "category"}
    if all(
        getattr(record_filter, f.name) in (None, False) or f.name in only_totals
        for f in dataclasses.fields(record_filter)
    ):
        # Status and category alone: the summary's totals, a few dozen rows.
        statuses = set(record_filter.statuses or STATUSES)
        return sum(
            count
            for (status, category), count in archive.totals().items()
            if status in statuses and record_filter.category in (None, category)
        ), True
    if GroupSummary.answers(record_filter):
        return sum(g.count for g in archive.groups(record_filter, limit=MAX_GROUPS)), True
    counted = archive.count(record_filter, up_to=COUNT_CAP)
    return min(counted, COUNT_CAP), counted <= COUNT_CAP


def _in_progress() -> float | None:
    """Jobs workers are running, from their metrics (``worker_jobs_in_progress``); ``None`` if unknown."""
    return _worker_gauge("worker_jobs_in_progress")


def _held() -> float | None:
    """Retries workers hold until due, from their metrics (``worker_retries_held``); ``None`` if unknown."""
    return _worker_gauge("worker_retries_held")


def _worker_gauge(name: str) -> float | None:
    """The sum of a worker gauge over the worker processes whose metrics this one reads, if any."""
    registry = metrics_registry() if multiprocess_dir() is not None else REGISTRY
    found = [
        sample.value for metric in registry.collect() if metric.name == name for sample in metric.samples
    ]
    return sum(found) if found else None


def render_record(
    console: ConsoleContext,
    request: Request,
    operator: Operator,
    record_id: int,
    *,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """One record's page: every field, attempts, traceback, request, replays, audit; ``extra``
    fills the action forms (an edit sent back with its error)."""
    archive, redactor = console.archive, console.redactor
    try:
        found = archive.get(record_id)
    except RecordNotFound as exc:
        raise Refused(404, str(exc)) from None
    view = redactor.view(found)
    audit = [redactor.view(entry) for entry in archive.audit(record_id=record_id)]
    context: dict[str, Any] = {"patch": "", "job_patch": "", "errors": {}, "reason": "", "notice": None}
    context.update(extra)
    body = found.decoded_body()
    trace_id, replay_of_trace_id = trace_ids(body.get("options") if body else None)
    return console.pages.render(
        request,
        "record.html",
        operator,
        status_code=status_code,
        record=view,
        provider=found.provider,
        audit=audit,
        replays=[e for e in audit if str(e["action"]).startswith("replay")],
        trace_id=trace_id,
        replay_of_trace_id=replay_of_trace_id,
        trace_url=console.settings.trace_url,
        **context,
    )


def page_router(console: ConsoleContext) -> APIRouter:  # noqa: PLR0915 - one closure per page
    """The GET routes of the console."""
    router = APIRouter(prefix="/ui", include_in_schema=False)
    archive, redactor, pages = console.archive, console.redactor, console.pages
    current = Depends(console.operator)
    hourly = HourlyCounts(lambda since_ms: archive.counts_by_hour(since_ms=since_ms))

    def overview_data(window: str) -> dict[str, Any]:
        hours = WINDOWS.get(window, 24)
        data: dict[str, Any] = {"window": window if window in WINDOWS else "24h", "windows": list(WINDOWS)}
        try:
            queues: list[QueueStat] | None = read_queue_stats(console.settings)
            data["broker_error"] = None
        except BrokerUnavailable as exc:
            queues, data["broker_error"] = None, redactor.text(str(exc))
        data["queues"] = queues
        data["consumers"] = next((q.consumers for q in queues or () if q.role == "work"), None)
        data["retry_waiting"] = sum(q.messages_ready for q in queues or () if q.role in ("retry", "delay"))
        data["in_progress"] = _in_progress()
        data["held"] = _held()
        try:
            summary = summarise_archive(archive)
            now_ms = int(time.time() * 1000)
            rows = hourly.rows(hours=hours, now_ms=now_ms)
            data["chart"] = hourly_chart(rows, hours=hours, now_ms=now_ms)
            oldest = archive.find(RecordFilter(statuses=[DEAD]), limit=1, oldest_first=True)
            data["oldest"] = redactor.view(oldest[0]) if oldest else None
            data["summary"], data["archive_error"] = summary, None
        except ArchiveError as exc:
            data["summary"], data["chart"], data["oldest"] = None, None, None
            data["archive_error"] = redactor.text(str(exc))
        return data

    @router.get("/", response_class=HTMLResponse)
    def overview(
        request: Request,
        operator: Operator = current,
        window: str = "24h",
        every: Annotated[int, Query(ge=1, le=300, description="Seconds between refreshes")] = REFRESH_S,
    ) -> HTMLResponse:
        return pages.render(
            request, "overview.html", operator, refresh_ms=every * 1000, **overview_data(window)
        )

    @router.get("/overview/live", response_class=HTMLResponse)
    def overview_live(request: Request, operator: Operator = current, window: str = "24h") -> HTMLResponse:
        return pages.render(request, "_overview_live.html", operator, **overview_data(window))

    @router.get("/groups", response_class=HTMLResponse)
    def groups(
        request: Request,
        *,
        operator: Operator = current,
        status: str = "dead",
        sort: str = "count",
        order: str = "desc",
        category: Text = None,
        provider: Text = None,
    ) -> HTMLResponse:
        status = status if status in STATUSES else DEAD
        sort = sort if sort in _GROUP_SORTS else "count"
        descending = order != "asc"
        record_filter = RecordFilter.for_provider(
            _blank(provider), statuses=[status], category=_blank(category)
        )
        found = archive.groups(record_filter, limit=MAX_GROUPS)
        found.sort(key=_GROUP_SORTS[sort], reverse=descending)
        return pages.render(
            request,
            "groups.html",
            operator,
            groups=[redactor.view(g) for g in found[:GROUPS_SHOWN]],
            total_groups=len(found),
            status=status,
            statuses=STATUSES,
            sort=sort,
            order="desc" if descending else "asc",
            sorts=list(_GROUP_SORTS),
            category=_blank(category) or "",
            provider=_blank(provider) or "",
        )

    @router.get("/groups/{fingerprint}", response_class=HTMLResponse)
    def group(
        request: Request, fingerprint: str, operator: Operator = current, run: int | None = None
    ) -> HTMLResponse:
        found = archive.groups(RecordFilter(fingerprint=_blank(fingerprint)), limit=1)
        if not found:
            raise Refused(404, "No dead letters have this fingerprint")
        by_status = {
            status: sum(
                g.count for g in archive.groups(RecordFilter(fingerprint=fingerprint, statuses=[status]))
            )
            for status in STATUSES
        }
        awaiting = by_status[DEAD]
        return pages.render(
            request,
            "group.html",
            operator,
            group=redactor.view(found[0]),
            awaiting=awaiting,
            by_status=by_status,
            run=console.runs.get(run) if run is not None else None,
        )

    @router.get("/replays/{run_id}", response_class=HTMLResponse)
    def replay_run(request: Request, run_id: int, operator: Operator = current) -> HTMLResponse:
        return pages.render(request, "_run.html", operator, run=console.runs.get(run_id))

    @router.get("/records", response_class=HTMLResponse)
    def records(
        request: Request,
        *,
        operator: Operator = current,
        status: Text = None,
        category: Text = None,
        provider: Text = None,
        operation: Text = None,
        group: Text = None,
        since: Text = None,
        until: Text = None,
        search: Text = None,
        before: Annotated[str | None, Query(max_length=60)] = None,
    ) -> HTMLResponse:
        filters = {
            "status": _blank(status) if _blank(status) in STATUSES else None,
            "category": _blank(category),
            "provider": _blank(provider),
            "operation": _blank(operation),
            "group": _blank(group),
            "since": _blank(since),
            "until": _blank(until),
            "search": _blank(search),
        }
        record_filter = RecordFilter.for_provider(
            filters["provider"],
            statuses=[filters["status"]] if filters["status"] else None,
            category=filters["category"],
            operation=filters["operation"],
            fingerprint=filters["group"],
            since_ms=_parse_time(since, "since"),
            until_ms=_parse_time(until, "until"),
            text=filters["search"],
        )
        cursor: tuple[int, int] | None = None
        if before:
            ms, _, record_id = before.partition(".")
            if not (ms.isdigit() and record_id.isdigit()):
                raise Refused(422, "before: expected a page cursor like 1764868800000.42")
            cursor = (int(ms), int(record_id))
        found = newest_page(archive, record_filter, limit=PAGE_SIZE + 1, before=cursor)
        more = len(found) > PAGE_SIZE
        found = found[:PAGE_SIZE]
        last = found[-1] if found else None
        shown = {k: v for k, v in filters.items() if v}
        return pages.render(
            request,
            "records.html",
            operator,
            # Only the columns the list shows are masked and rendered.
            records=[
                redactor.view({name: getattr(r, name) for name in _LIST_FIELDS} | {"provider": r.provider})
                for r in found
            ],
            filters=filters,
            shown=shown,
            statuses=STATUSES,
            next_cursor=f"{last.dead_lettered_ms}.{last.id}" if more and last is not None else None,
            first_page=before is not None,
            total=count_matches(archive, record_filter),
        )

    @router.get("/records/{record_id}", response_class=HTMLResponse)
    def record(request: Request, record_id: int, operator: Operator = current) -> HTMLResponse:
        return render_record(console, request, operator, record_id)

    @router.get("/audit", response_class=HTMLResponse)
    def audit(
        request: Request,
        operator: Operator = current,
        who: Text = None,
        action: Text = None,
        record: Annotated[str | None, Query(max_length=20)] = None,
    ) -> HTMLResponse:
        record_text = _blank(record)
        if record_text is not None and not record_text.isdigit():
            raise Refused(422, "record: expected a record id")
        entries = archive.audit(
            limit=AUDIT_LIMIT,
            who=_blank(who),
            action=_blank(action),
            record_id=int(record_text) if record_text else None,
        )
        return pages.render(
            request,
            "audit.html",
            operator,
            entries=[redactor.view(e) for e in entries],
            who=_blank(who) or "",
            action=_blank(action) or "",
            record=record_text or "",
            actions=sorted(archive.audit_counts()),
        )

    return router
