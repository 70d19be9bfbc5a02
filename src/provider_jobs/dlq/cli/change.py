"""The ``provider-jobs dlq`` commands that change things: ``replay``, ``discard``, ``purge``, ``process``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ...errors import InvalidJob
from ...gc_pause import paused_gc
from ...health.watch import Pause, follow_breakers
from ...redaction import Redactor
from ...settings import Settings
from ..actions import discard_records, replay_records
from ..archive.operations import DONE
from ..archive.store import DEAD, DISCARDED
from ..operations import Operations, describe_filter
from ..replay.replayer import FAILED, Replayer, ReplayOutcome
from ..triage import DEFAULT_POLICY, DlqPolicy, process_dlq
from .common import (
    EXIT_BROKER,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    MAX_RECORD_ID,
    CategoryOpt,
    GroupOpt,
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
    _resume_hint,
    _session,
    _who,
)

__all__ = ["discard", "process", "purge", "replay"]


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


#: Archive ids as arguments; an id named twice counts once.
IdsArg = Annotated[
    list[int] | None,
    typer.Argument(min=1, max=MAX_RECORD_ID, help="Archive ids; or select with the options."),
]


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
            _progress(len(chosen), enabled=not as_json and len(chosen) > 1) as advance,
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
                _say_if_stopped(Operations(archive, broker_url=settings.broker_url), op_id)
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


def _say_if_stopped(operations: Operations, op_id: int) -> None:
    """An operation that did not finish (paused, cancelled, failed) says how to go on."""
    stopped = operations.get(op_id)
    if stopped.state != DONE:
        _err.print(f"operation {op_id} is {stopped.state}: {_resume_hint(op_id)}", highlight=False)


def _show_pause(provider: str, pause: Pause | None) -> None:
    """Say, as it happens, that a provider's records wait for its breaker, and that they go again."""
    if pause is None:
        line = f"resumed: {provider}"
    else:
        line = f"paused: {pause.describe()} (its records wait for it; --ignore-breaker sends them anyway)"
    _err.print(line, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_err, transient=True) as progress:
        task = progress.add_task("replay", total=total)

        def advance(outcome: ReplayOutcome) -> None:
            progress.advance(task)
            if outcome.status == FAILED:
                detail = Redactor().text(outcome.detail or "")
                progress.console.print(f"record {outcome.record_id}: {detail}", markup=False)

        yield advance


def discard(
    ids: IdsArg = None,
    *,
    reason: Annotated[str, typer.Option(help="Why (required, kept in the audit log).")] = "",
    group: GroupOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    search: SearchOpt = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Discard every dead letter matching the filters.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark dead letters discarded (kept in the archive, never replayed by triage)."""
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    _check_text(reason, "--reason")
    ids = list(dict.fromkeys(ids)) if ids else ids
    selecting = any(v is not None for v in (group, category, provider, operation, since, until, search))
    if not ids and not selecting and not all_matching:
        raise typer.BadParameter("name ids, a --group, filters, or --all")
    with _session() as (settings, archive):
        record_filter = _filter(None, category, provider, operation, group, since, until, search, ids=ids)
        # Stored as an operation, as every bulk discard is: `dlq operations show` lists it.
        changed = discard_records(archive, record_filter, who=_who(settings), reason=reason)
    if as_json:
        _print_json({"discarded": changed})
    else:
        _out.print(f"Discarded {len(changed)} dead letter(s): {', '.join(map(str, changed)) or '-'}")
    if not changed:
        raise typer.Exit(EXIT_NOT_FOUND)


def purge(
    *,
    status: StatusOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    group: GroupOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    search: SearchOpt = None,
    reason: ReasonOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete (records are gone for good).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete records matching the filters from the archive (default: discarded ones)."""
    _check_text(reason, "--reason")
    record_filter = _filter(
        status, category, provider, operation, group, since, until, search, default_status=DISCARDED
    )
    with _session() as (settings, archive):
        if not yes:
            count = archive.count(record_filter)
            _err.print(f"Would delete {count} record(s); add --yes to delete them.")
            raise typer.Exit(EXIT_USAGE if count else EXIT_NOT_FOUND)
        deleted = archive.purge(record_filter, who=_who(settings), reason=reason)
    if as_json:
        _print_json({"deleted": deleted})
    else:
        _out.print(f"Deleted {deleted} record(s).")
    if not deleted:
        raise typer.Exit(EXIT_NOT_FOUND)


def _announced_providers(settings: Settings) -> set[str]:
    """Providers running workers announce and whose breaker is closed; none when RabbitMQ
    cannot be read (a warning says so)."""
    import pika.exceptions

    from ...health import read_directory

    try:
        directory, _ = read_directory(settings, timeout_s=3.0)
    except (pika.exceptions.AMQPError, OSError) as exc:
        _err.print(
            f"warning: cannot read the providers workers announce ({type(exc).__name__})", highlight=False
        )
        return set()
    return {entry.key for entry in directory.entries() if entry.healthy}


def process(
    policy_file: Annotated[str | None, typer.Option("--policy", help="TOML or JSON policy file.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; change nothing.")] = False,
    ignore_breaker: Annotated[
        bool,
        typer.Option("--ignore-breaker", help="Send records whose provider's breaker is open too, at once."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Triage dead letters by policy: replay, discard, escalate (default: the built-in policy).

    A provider counts as registered when it is configured here or a running worker
    announces it; --dry-run also shows what a recovery of each healthy provider would replay.
    The records a rule replays wait while their provider's circuit breaker is open, as in
    `dlq replay`; --ignore-breaker sends them anyway.
    """
    from ...providers import ProviderRegistry, load_providers
    from ..recovery import recovery_plan

    with _session() as (settings, archive):
        path = policy_file or settings.dlq_policy_file
        policy = DlqPolicy.load(path) if path else DEFAULT_POLICY
        registry = ProviderRegistry()
        load_providers(registry, spec=settings.providers, path=settings.providers_file)
        healthy = _announced_providers(settings)
        replayer = Replayer(archive=archive, broker_url=settings.broker_url, who=_who(settings))
        with follow_breakers(settings, ignore=dry_run or ignore_breaker) as health:
            report = process_dlq(
                archive,
                policy=policy,
                replayer=replayer,
                providers=set(registry.keys()) | healthy,
                dry_run=dry_run,
                who=_who(settings),
                redactor=settings.redactor(),
                health=health,
                on_pause=_show_pause,
            )
        recoveries = (
            [recovery_plan(archive, key, policy.recovery_categories) for key in sorted(healthy)]
            if dry_run
            else []
        )
    redactor = settings.redactor()
    if as_json:
        _print_json(
            {
                "dry_run": dry_run,
                "decisions": [redactor.view(d) for d in report.decisions],
                "replay": [redactor.view(o) for o in report.replay.outcomes] if report.replay else [],
                "paused": [p.as_dict() for p in report.replay.pauses] if report.replay else [],
                "recovery": [
                    {"provider": p.provider, "record_ids": list(p.record_ids)}
                    for p in recoveries
                    if p.record_ids
                ],
            }
        )
    else:
        table = Table(
            title=f"{'plan' if dry_run else 'triage'}: {len(report.decisions)} dead letter(s)",
            title_justify="left",
        )
        for name in ("id", "job", "category", "rule", "action", "why"):
            table.add_column(name, overflow="fold")
        for d in report.decisions:
            table.add_row(
                str(d.record_id),
                Text((d.job_id or "-")[:12]),
                Text(d.category or "-"),
                Text(d.rule or "-"),
                d.action,
                Text(redactor.view(d.detail)),
            )
        _out.print(table)
        for pause in report.replay.pauses if report.replay else []:
            _out.print(Text(f"paused: {pause.describe()}, then sent"))
        for plan in recoveries:
            if plan.record_ids:
                _out.print(
                    Text(
                        f"recovery of {plan.provider} would replay {len(plan.record_ids)} dead letter(s) "
                        f"({', '.join(policy.recovery_categories)}): ids "
                        + ", ".join(map(str, plan.record_ids[:20]))
                        + (" ..." if len(plan.record_ids) > 20 else "")
                    )
                )
    if report.replay is not None and report.replay.failed:
        raise typer.Exit(EXIT_BROKER)
