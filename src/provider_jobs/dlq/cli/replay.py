"""``provider-jobs dlq replay``: send dead letters again, as an operation stored in the archive."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ...errors import InvalidJob
from ...gc_pause import paused_gc
from ...health.watch import follow_breakers
from ..actions import replay_records
from ..archive.store import DEAD
from ..operations import Operations, describe_filter
from .common import (
    EXIT_BROKER,
    EXIT_NOT_FOUND,
    CategoryOpt,
    GroupOpt,
    IdsArg,
    JsonOpt,
    OperationOpt,
    ProviderOpt,
    ReasonOpt,
    SearchOpt,
    SinceOpt,
    StatusOpt,
    UntilOpt,
    _check_text,
    _err,
    _filter,
    _out,
    _print_json,
    _session,
    _who,
)
from .progress import _progress_bar, _say_if_stopped, _show_pause

__all__ = ["replay"]


def _json_patch(text: str | None, name: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        patch = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJob(f"{name} is not JSON ({exc}); nothing was sent") from None
    if not isinstance(patch, dict):
        raise InvalidJob(
            f"{name} must be a JSON object (a merge patch), not {type(patch).__name__}; nothing was sent"
        )
    return patch


def replay(
    ids: IdsArg = None,
    *,
    group: GroupOpt = None,
    status: StatusOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    search: SearchOpt = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Replay every record matching the filters.")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would be sent; send nothing.")] = False,
    rate: Annotated[float | None, typer.Option(min=0.001, help="Messages per second at most.")] = None,
    edit: Annotated[str | None, typer.Option(help="JSON merge patch applied to each job's request.")] = None,
    edit_job: Annotated[str | None, typer.Option(help="JSON merge patch applied to each job.")] = None,
    force: Annotated[bool, typer.Option(help="Also replay records already replayed or discarded.")] = False,
    ignore_breaker: Annotated[
        bool,
        typer.Option("--ignore-breaker", help="Send records whose provider's breaker is open too, at once."),
    ] = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send dead letters again with a fresh attempt budget, each record once.

    The records of a provider whose circuit breaker is open (or whose Retry-After is
    pending), as running workers share it on the stream <queue>.health, wait until it
    closes while the others go; --ignore-breaker sends them anyway.
    """
    selecting = any(v is not None for v in (group, category, provider, operation, since, until, search))
    if not ids and not selecting and not all_matching:
        raise typer.BadParameter("name ids, a --group, filters, or --all")
    _check_text(reason, "--reason")
    ids = list(dict.fromkeys(ids)) if ids else ids
    with _session() as (settings, archive):
        request_patch, job_patch = _json_patch(edit, "--edit"), _json_patch(edit_job, "--edit-job")
        default_status = None if force else DEAD
        record_filter = _filter(
            status, category, provider, operation, group, since, until, search, default_status=default_status
        )
        chosen = ids or archive.ids(record_filter)
        if not chosen:
            _err.print("No dead letter matched.")
            raise typer.Exit(EXIT_NOT_FOUND)
        with (
            follow_breakers(settings, ignore=dry_run or ignore_breaker) as health,
            _progress_bar(
                "replaying", total=len(chosen), enabled=not as_json and len(chosen) > 1, show_failures=True
            ) as advance,
        ):
            # The collector is held off unless paced: this process is ours.
            with paused_gc() if rate is None and not dry_run else contextlib.nullcontext():
                op_id, report = replay_records(
                    archive,
                    broker_url=settings.broker_url,
                    who=_who(settings),
                    ids=chosen,
                    selection={"ids": len(chosen)} if ids else describe_filter(record_filter),
                    dry_run=dry_run,
                    on_outcome=advance,
                    health=health,
                    on_pause=_show_pause,
                    reason=reason,
                    force=force,
                    rate_per_s=rate,
                    request_patch=request_patch,
                    job_patch=job_patch,
                )
            if op_id is not None:
                _say_if_stopped(Operations(archive, broker_url=settings.broker_url).get(op_id))
    redactor = settings.redactor()
    outcomes = [redactor.view(o) for o in report.outcomes]
    if as_json:
        _print_json(
            {
                "elapsed_s": report.elapsed_s,
                "operation": op_id,
                "paused": [pause.as_dict() for pause in report.pauses],
                "outcomes": outcomes,
            }
        )
    else:
        table = Table(
            title=f"{'dry run: ' if dry_run else ''}{len(report.outcomes)} record(s) in "
            f"{report.elapsed_s:.2f} s" + (f" (operation {op_id})" if op_id else ""),
            title_justify="left",
        )
        for name in ("id", "outcome", "job", "queue", "new message id / detail"):
            table.add_column(name, overflow="fold")
        for o in outcomes:
            table.add_row(
                str(o["record_id"]),
                o["status"],
                Text((o["job_id"] or "-")[:12]),
                Text(o["queue_name"] or "-"),
                Text(o["message_id"] or o["detail"] or ""),
            )
        _out.print(table)
        for pause in report.pauses:
            _out.print(Text(f"paused: {pause.describe()}, then sent"))
    if report.failed:
        raise typer.Exit(EXIT_BROKER)
    if not dry_run and not report.published:
        raise typer.Exit(EXIT_NOT_FOUND)
