"""The read-only ``provider-jobs dlq`` commands: ``list``, ``show``, ``groups`` and ``audit``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..archive.records import DeadLetter
from .common import (
    EXIT_NOT_FOUND,
    CategoryOpt,
    GroupOpt,
    JsonOpt,
    OperationOpt,
    ProviderOpt,
    SearchOpt,
    SinceOpt,
    StatusOpt,
    UntilOpt,
    _filter,
    _out,
    _print_json,
    _session,
    _when,
)

__all__ = ["audit", "groups", "list_records", "show"]


def _records_table(records: list[DeadLetter], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("id", "dead-lettered (UTC)", "status", "job", "provider", "op", "category", "att.", "error"):
        table.add_column(
            name,
            overflow="fold" if name == "error" else "ellipsis",
            no_wrap=name != "error",
            max_width=60 if name == "error" else None,
        )
    for r in records:
        table.add_row(
            str(r.id),
            _when(r.dead_lettered_ms),
            r.status,
            (r.job_id or "-")[:12],
            r.provider or "-",
            r.operation or "-",
            r.category,
            str(r.attempts),
            r.error,
        )
    return table


def list_records(
    *,
    status: StatusOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    group: GroupOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    search: SearchOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Records per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Page number, newest first.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """List archived dead letters, newest first."""
    record_filter = _filter(status, category, provider, operation, group, since, until, search)
    with _session() as (_, archive):
        records = archive.find(record_filter, limit=limit, offset=(page - 1) * limit)
        total = archive.count(record_filter)
    if as_json:
        _print_json({"total": total, "page": page, "records": [r.to_dict() for r in records]})
    else:
        _out.print(_records_table(records, f"{total} dead letter(s), page {page}"))
    if not records:
        raise typer.Exit(EXIT_NOT_FOUND)


def show(record_id: Annotated[int, typer.Argument(help="Archive id.")], as_json: JsonOpt = False) -> None:
    """The whole failure story of one dead letter, every attempt."""
    with _session() as (_, archive):
        record = archive.get(record_id)
        audit = archive.audit(record_id=record_id)
    if as_json:
        _print_json({**record.to_dict(with_body=True), "audit": [vars(a) for a in audit]})
        return
    fields = Table.grid(padding=(0, 2))
    for name, value in (
        ("id", record.id),
        ("status", record.status + (f" ({record.status_reason})" if record.status_reason else "")),
        ("job id", record.job_id),
        ("message id", record.message_id),
        ("queue", record.queue_name),
        ("actor", record.actor_name),
        ("provider", record.provider),
        ("operation", record.operation),
        ("priority", record.priority),
        ("request", json.dumps(record.request)),
        ("category", f"{record.category} (retryable: {record.retryable})"),
        ("reason", record.reason),
        ("error", f"{record.error_type or ''}{': ' if record.error_type else ''}{record.error}"),
        ("attempts", f"{record.attempts} (max retries {record.max_retries})"),
        ("first enqueued", _when(record.first_enqueued_ms)),
        ("dead-lettered", _when(record.dead_lettered_ms)),
        ("archived", _when(record.archived_ms)),
        ("fingerprint", record.fingerprint),
        ("replays", f"{record.replay_count} {record.replay_message_ids or ''}"),
    ):
        fields.add_row(f"[bold]{name}[/]", str(value if value is not None else "-"))
    _out.print(fields)
    if record.attempt_history:
        attempts = Table(title="attempts", title_justify="left")
        for name in ("#", "at (UTC)", "worker", "category", "retryable", "error", "next delay"):
            attempts.add_column(name)
        for a in record.attempt_history:
            delay = a.get("delay_ms")
            attempts.add_row(
                str(a.get("attempt")),
                _when(a.get("at_ms")),
                str(a.get("worker_id")),
                str(a.get("category")),
                str(a.get("retryable")),
                f"{a.get('error_type')}: {a.get('error')}",
                "-" if delay is None else f"{delay} ms",
            )
        _out.print(attempts)
    if record.x_death:
        _out.print(f"[bold]x-death[/] {json.dumps(record.x_death)}", highlight=False)
    if record.traceback:
        _out.print("[bold]traceback[/]")
        _out.print(record.traceback, markup=False, highlight=False)
    if record.category == "undecodable":
        _out.print(f"[bold]raw body[/] {record.body!r}", markup=False, highlight=False)
    for entry in audit:
        _out.print(
            f"[bold]audit[/] {_when(entry.at_ms)} {entry.who} {entry.action} {entry.reason or ''}",
            highlight=False,
        )


def groups(
    *,
    status: StatusOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Most groups shown.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Dead letters grouped by cause (fingerprint), largest group first."""
    record_filter = _filter(status, category, provider, operation, None, since, until, None)
    with _session() as (_, archive):
        found = archive.groups(record_filter, limit=limit)
    if as_json:
        _print_json([vars(g) for g in found])
    else:
        table = Table(title=f"{len(found)} group(s)", title_justify="left")
        for name in (
            "fingerprint",
            "count",
            "first seen (UTC)",
            "last seen (UTC)",
            "category",
            "provider",
            "op",
            "sample error",
        ):
            table.add_column(name, no_wrap=name != "sample error", overflow="fold", max_width=50)
        for g in found:
            provider_key = f"{g.provider_namespace}/{g.resource_type}" if g.provider_namespace else "-"
            table.add_row(
                g.fingerprint,
                str(g.count),
                _when(g.first_seen_ms),
                _when(g.last_seen_ms),
                g.category,
                provider_key,
                g.operation or "-",
                g.sample_error,
            )
        _out.print(table)
    if not found:
        raise typer.Exit(EXIT_NOT_FOUND)


def audit(
    record: Annotated[int | None, typer.Option(help="Only entries about this archive id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most entries shown.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Who replayed, discarded, edited or purged what, when and why; newest first."""
    with _session() as (_, archive):
        entries = archive.audit(limit=limit, record_id=record)
    if as_json:
        _print_json([vars(e) for e in entries])
        return
    table = Table(
        title=f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}", title_justify="left"
    )
    for name in ("at (UTC)", "who", "action", "record", "reason", "details"):
        table.add_column(name, overflow="fold")
    for e in entries:
        table.add_row(
            _when(e.at_ms), e.who, e.action, str(e.record_id or "-"), e.reason or "-", json.dumps(e.details)
        )
    _out.print(table)
