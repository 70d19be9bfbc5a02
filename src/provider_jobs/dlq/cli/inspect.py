"""The read-only ``provider-jobs dlq`` commands: ``list``, ``show``, ``groups`` and ``audit``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ...redaction import Redactor
from ..archive.records import DeadLetter
from .common import (
    EXIT_NOT_FOUND,
    MAX_RECORD_ID,
    CategoryOpt,
    GroupOpt,
    JsonOpt,
    OperationOpt,
    ProviderOpt,
    RecordIdArg,
    SearchOpt,
    SinceOpt,
    StatusOpt,
    UntilOpt,
    _filter,
    _out,
    _print_json,
    _session,
    _when,
    _who,
)

__all__ = ["audit", "groups", "list_records", "show"]


def _records_table(records: list[DeadLetter], title: str, redactor: Redactor) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("id", "dead-lettered (UTC)", "status", "job", "provider", "op", "category", "att.", "error"):
        table.add_column(
            name,
            overflow="fold" if name == "error" else "ellipsis",
            no_wrap=name != "error",
            max_width=60 if name == "error" else None,
        )
    for r in records:
        # Stored text is shown as text (Text cells), never read as Rich markup.
        table.add_row(
            str(r.id),
            _when(r.dead_lettered_ms),
            r.status,
            Text((r.job_id or "-")[:12]),
            Text(r.provider or "-"),
            Text(r.operation or "-"),
            Text(r.category),
            str(r.attempts),
            Text(redactor.view(r.error)),
        )
    return table


def _record_json(record: DeadLetter, redactor: Redactor, *, with_body: bool, reveal: bool = False) -> Any:
    data = redactor.view(record, reveal=reveal, omit=() if with_body else ("body",))
    data["provider"] = record.provider
    return data


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
    page: Annotated[int, typer.Option(min=1, max=1_000_000, help="Page number, newest first.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """List archived dead letters, newest first."""
    record_filter = _filter(status, category, provider, operation, group, since, until, search)
    with _session() as (settings, archive):
        records = archive.find(record_filter, limit=limit, offset=(page - 1) * limit)
        total = archive.count(record_filter)
    redactor = settings.redactor()
    if as_json:
        _print_json(
            {
                "total": total,
                "page": page,
                "records": [_record_json(r, redactor, with_body=False) for r in records],
            }
        )
    else:
        _out.print(_records_table(records, f"{total} dead letter(s), page {page}", redactor))
    if not records:
        raise typer.Exit(EXIT_NOT_FOUND)


def show(
    record_id: RecordIdArg,
    as_json: JsonOpt = False,
    reveal: Annotated[
        bool,
        typer.Option(help="Show secret values unmasked (written to the audit log)."),
    ] = False,
) -> None:
    """The whole failure story of one dead letter, every attempt.

    Secret values (PROVIDER_JOBS_REDACT_KEYS, URL passwords) are masked unless --reveal.
    """
    with _session() as (settings, archive):
        record = archive.get(record_id)
        if reveal:
            archive.write_audit(
                who=_who(settings), action="reveal", record_id=record_id, details={"via": "cli"}
            )
        audit = archive.audit(record_id=record_id)
    redactor = settings.redactor()
    data = _record_json(record, redactor, with_body=True, reveal=reveal)
    entries = [redactor.view(a) for a in audit]
    if as_json:
        _print_json({**data, "audit": entries})
        return
    fields = Table.grid(padding=(0, 2))
    for name, value in (
        ("id", record.id),
        ("status", data["status"] + (f" ({data['status_reason']})" if data["status_reason"] else "")),
        ("job id", data["job_id"]),
        ("message id", data["message_id"]),
        ("queue", data["queue_name"]),
        ("actor", data["actor_name"]),
        ("provider", data["provider"]),
        ("operation", data["operation"]),
        ("priority", record.priority),
        ("request", json.dumps(data["request"])),
        ("category", f"{data['category']} (retryable: {record.retryable})"),
        ("reason", data["reason"]),
        ("error", f"{data['error_type'] or ''}{': ' if data['error_type'] else ''}{data['error']}"),
        ("attempts", f"{record.attempts} (max retries {record.max_retries})"),
        ("first enqueued", _when(record.first_enqueued_ms)),
        ("dead-lettered", _when(record.dead_lettered_ms)),
        ("archived", _when(record.archived_ms)),
        ("fingerprint", data["fingerprint"]),
        ("replays", f"{record.replay_count} {data['replay_message_ids'] or ''}"),
    ):
        fields.add_row(Text(name, style="bold"), Text(str(value if value is not None else "-")))
    _out.print(fields)
    history = data["attempt_history"]
    if isinstance(history, list) and history:
        attempts = Table(title="attempts", title_justify="left")
        for name in ("#", "at (UTC)", "worker", "category", "retryable", "error", "next delay"):
            attempts.add_column(name)
        for a in history:
            if not isinstance(a, dict):
                attempts.add_row(Text(str(a)))
                continue
            delay = a.get("delay_ms")
            at_ms = a.get("at_ms")
            attempts.add_row(
                Text(str(a.get("attempt"))),
                _when(at_ms if isinstance(at_ms, int) else None),
                Text(str(a.get("worker_id"))),
                Text(str(a.get("category"))),
                Text(str(a.get("retryable"))),
                Text(f"{a.get('error_type')}: {a.get('error')}"),
                Text("-" if delay is None else f"{delay} ms"),
            )
        _out.print(attempts)
    if data["x_death"]:
        _out.print(Text.assemble(("x-death", "bold"), " ", json.dumps(data["x_death"])), highlight=False)
    if data["traceback"]:
        _out.print(Text("traceback", style="bold"))
        _out.print(Text(data["traceback"]), highlight=False)
    if record.category == "undecodable":
        _out.print(Text.assemble(("raw body", "bold"), " ", data["body"]), highlight=False)
    for entry in entries:
        _out.print(
            Text.assemble(
                ("audit", "bold"),
                f" {_when(entry['at_ms'])} {entry['who']} {entry['action']} {entry['reason'] or ''}",
            ),
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
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Most groups shown.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Dead letters grouped by cause (fingerprint), largest group first."""
    record_filter = _filter(status, category, provider, operation, None, since, until, None)
    with _session() as (settings, archive):
        found = archive.groups(record_filter, limit=limit)
    redactor = settings.redactor()
    if as_json:
        _print_json([redactor.view(g) for g in found])
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
                Text(g.fingerprint),
                str(g.count),
                _when(g.first_seen_ms),
                _when(g.last_seen_ms),
                Text(g.category),
                Text(provider_key),
                Text(g.operation or "-"),
                Text(redactor.view(g.sample_error)),
            )
        _out.print(table)
    if not found:
        raise typer.Exit(EXIT_NOT_FOUND)


def audit(
    record: Annotated[
        int | None, typer.Option(min=1, max=MAX_RECORD_ID, help="Only entries about this archive id.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Most entries shown.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Who replayed, discarded, edited or purged what, when and why; newest first."""
    with _session() as (settings, archive):
        found = archive.audit(limit=limit, record_id=record)
    entries = [settings.redactor().view(e) for e in found]
    if as_json:
        _print_json(entries)
        return
    table = Table(
        title=f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}", title_justify="left"
    )
    for name in ("at (UTC)", "who", "action", "record", "reason", "details"):
        table.add_column(name, overflow="fold")
    for e in entries:
        table.add_row(
            _when(e["at_ms"]),
            Text(e["who"]),
            Text(e["action"]),
            str(e["record_id"] or "-"),
            Text(e["reason"] or "-"),
            Text(json.dumps(e["details"])),
        )
    _out.print(table)
