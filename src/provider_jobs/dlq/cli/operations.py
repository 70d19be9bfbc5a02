"""``provider-jobs dlq operations ...``: the bulk replays and discards stored in the archive.

``dlq replay`` and ``dlq discard`` start them; ``list`` and ``show`` read them;
``pause`` and ``cancel`` ask the process running one to stop after its chunk;
``resume`` goes on with a paused, failed or interrupted one (its process died)
in this process; ``resolve`` says whether the records it cannot vouch for were sent.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ...errors import ArchiveError, BrokerUnavailable, RecordConflict
from ...gc_pause import paused_gc
from ...health.watch import follow_breakers
from ...settings import Settings
from ..archive.operations import FAILED_STATE, SKIPPED, UNCERTAIN, OperationRow
from ..operations import Operations, interrupted, operation_view
from .common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    MAX_RECORD_ID,
    JsonOpt,
    ReasonOpt,
    _check_text,
    _err,
    _out,
    _print_json,
    _resume_hint,
    _session,
    _when,
    _who,
)
from .progress import _progress_bar, _say_if_stopped, _show_pause

__all__ = ["operations_app"]

operations_app = typer.Typer(
    help="Bulk replays and discards stored in the archive: list, show, pause, resume, cancel, resolve.",
    no_args_is_help=True,
)

OperationIdArg = Annotated[int, typer.Argument(min=1, max=MAX_RECORD_ID, help="Operation id.")]
#: Records of one state ``show`` lists at most.
_SHOWN = 1000


def _state(operation: OperationRow) -> str:
    return f"{operation.state} (interrupted)" if interrupted(operation) else operation.state


def _counts(operation: OperationRow) -> str:
    return ", ".join(f"{state} {count}" for state, count in sorted(operation.counts.items()))


def _resume(
    settings: Settings, operations: Operations, op_id: int, *, as_json: bool, ignore_breaker: bool
) -> None:
    """Take the operation over and run it here, then print how it stands."""
    operation = operations.get(op_id)
    replay = operation.action == "replay"
    with (
        follow_breakers(settings, ignore=ignore_breaker or not replay) as health,
        # This process is ours: the collector is held off while a replay runs as fast as it goes.
        paused_gc() if not operation.options.get("rate_per_s") else contextlib.nullcontext(),
        _progress_bar(
            f"operation {operation.id}",
            total=operation.total,
            completed=operation.settled,
            enabled=not as_json,
        ) as advance,
    ):
        try:
            moved = operations.take_over(op_id)
            if moved.get(UNCERTAIN):
                _err.print(
                    f"operation {op_id}: {moved[UNCERTAIN]} record(s) were claimed when its process "
                    "stopped and may have been sent: no replay sends them until `dlq operations "
                    f"resolve {op_id} --sent|--not-sent` says (`show` lists them)",
                    highlight=False,
                )
            stopped = operations.run(op_id, on_outcome=advance, health=health, on_pause=_show_pause)
        except RecordConflict as exc:
            _err.print(f"provider-jobs dlq: {exc}", markup=False, highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except (ArchiveError, BrokerUnavailable) as exc:
            # Stored as failed: one line says so, and how to go on.
            raise type(exc)(f"{exc}; {_resume_hint(op_id)}") from exc
    _print_operation(stopped, as_json=as_json)
    _say_if_stopped(stopped)


def _print_operation(operation: OperationRow, *, as_json: bool) -> None:
    if as_json:
        _print_json(operation_view(operation))
        return
    _out.print(
        Text(
            f"operation {operation.id}: {operation.action} by {operation.who}, {_state(operation)}, "
            f"{operation.settled}/{operation.total} settled ({_counts(operation)})"
        )
    )


@operations_app.command("list")
def list_operations(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Operations, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The latest operations, newest first."""
    with _session() as (_, archive):
        found = Operations(archive, broker_url="").latest(limit=limit)
    if as_json:
        _print_json([operation_view(o) for o in found])
        return
    table = Table(title=f"{len(found)} operation(s)", title_justify="left")
    for name in ("id", "started (UTC)", "action", "who", "state", "settled", "outcomes", "selection"):
        table.add_column(name, overflow="fold")
    for o in found:
        table.add_row(
            str(o.id),
            _when(o.created_ms),
            o.action,
            Text(o.who),
            _state(o),
            f"{o.settled}/{o.total}",
            _counts(o),
            Text(", ".join(f"{k}={v}" for k, v in o.selection.items())),
        )
    _out.print(table)
    if not found:
        raise typer.Exit(EXIT_NOT_FOUND)


@operations_app.command()
def show(operation_id: OperationIdArg, as_json: JsonOpt = False) -> None:
    """One operation: its progress, and each record it failed, skipped or cannot vouch for."""
    with _session() as (settings, archive):
        operations = Operations(archive, broker_url="")
        found = operations.get(operation_id)
        listed = operations.records(operation_id, states=[FAILED_STATE, UNCERTAIN, SKIPPED], limit=_SHOWN)
    redactor = settings.redactor()
    if as_json:
        _print_json({**operation_view(found), "records": [redactor.view(r) for r in listed]})
        return
    _print_operation(found, as_json=False)
    _out.print(
        Text(
            f"selection: {found.selection}; reason: {found.reason or '-'}; "
            f"runner: {found.runner or '-'}; error: {found.error or '-'}"
        )
    )
    if listed:
        table = Table(title="records not sent as asked", title_justify="left")
        for name in ("record", "state", "why"):
            table.add_column(name, overflow="fold")
        for r in listed:
            table.add_row(str(r.record_id), r.state, Text(redactor.view(r.detail or "")))
        _out.print(table)


@operations_app.command()
def pause(operation_id: OperationIdArg, as_json: JsonOpt = False) -> None:
    """Ask a running operation to stop after its current chunk."""
    _steer(operation_id, "pause", as_json=as_json)


@operations_app.command()
def cancel(operation_id: OperationIdArg, as_json: JsonOpt = False) -> None:
    """Stop an operation for good after its current chunk; what is pending is not sent."""
    _steer(operation_id, "cancel", as_json=as_json)


def _steer(operation_id: int, action: str, *, as_json: bool) -> None:
    with _session() as (_, archive):
        operations = Operations(archive, broker_url="")
        try:
            steered = operations.pause(operation_id) if action == "pause" else operations.cancel(operation_id)
        except RecordConflict as exc:
            _err.print(f"provider-jobs dlq: {exc}", markup=False, highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
    _print_operation(steered, as_json=as_json)


@operations_app.command()
def resume(
    operation_id: OperationIdArg,
    ignore_breaker: Annotated[
        bool,
        typer.Option("--ignore-breaker", help="Send records whose provider's breaker is open too, at once."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Go on with a paused, failed or interrupted operation, here, until it ends.

    Records its stopped process had marked are not sent again; records it had claimed
    may have been sent: they are uncertain, and no replay sends them until `resolve`.
    """
    with _session() as (settings, archive):
        operations = Operations(archive, broker_url=settings.broker_url)
        _resume(settings, operations, operation_id, as_json=as_json, ignore_breaker=ignore_breaker)


@operations_app.command()
def resolve(
    operation_id: OperationIdArg,
    sent: Annotated[
        bool | None,
        typer.Option(
            "--sent/--not-sent",
            help="--sent: their jobs ran, mark them replayed; --not-sent: make them dead letters "
            "awaiting action again, which any replay may send.",
            show_default=False,
        ),
    ] = None,
    record_ids: Annotated[
        list[int] | None,
        typer.Option("--id", min=1, max=MAX_RECORD_ID, help="Only this record (repeatable)."),
    ] = None,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Say whether the records an interrupted operation cannot vouch for (uncertain) were sent.

    An uncertain record was claimed when the process running the operation stopped: its
    message may have been published. No replay sends it until this says what became of it.
    """
    if sent is None:
        raise typer.BadParameter("say --sent or --not-sent")
    _check_text(reason, "--reason")
    with _session() as (settings, archive):
        operations = Operations(archive, broker_url="")
        resolved = operations.resolve(
            operation_id, sent=sent, who=_who(settings), reason=reason, record_ids=record_ids
        )
        after = operations.get(operation_id)
    if as_json:
        _print_json({"resolved": resolved, "operation": operation_view(after)})
    else:
        outcome = "marked replayed" if sent else "dead letters awaiting action again"
        _out.print(Text(f"{len(resolved)} uncertain record(s) of operation {operation_id}: {outcome}"))
        _print_operation(after, as_json=False)
    if not resolved:
        raise typer.Exit(EXIT_NOT_FOUND)
