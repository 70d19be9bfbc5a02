"""``provider-jobs dlq ...`` (the operator's commands) and ``provider-jobs archiver``.

Tables for people, ``--json`` for scripts. Exit codes:

- 0: done;
- 1: no record matched, or an id is not in the archive;
- 2: bad usage or configuration, or an invalid ``--edit`` (nothing was sent);
- 3: the archive database cannot be reached;
- 4: RabbitMQ cannot be reached, or a replay could not be published.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import (
    ArchiveUnavailable,
    BrokerUnavailable,
    ConfigurationError,
    InvalidJob,
    NotReplayable,
    ProviderJobsError,
    RecordNotFound,
)
from ..settings import Settings
from .archive import DEAD, DISCARDED, STATUSES, DeadLetterArchive
from .filters import RecordFilter
from .policy import DEFAULT_POLICY, DlqPolicy, process_dlq
from .records import DeadLetter
from .replay import FAILED, Replayer, ReplayOutcome

__all__ = ["EXIT_ARCHIVE", "EXIT_BROKER", "EXIT_NOT_FOUND", "EXIT_USAGE", "archiver", "dlq_app"]

EXIT_NOT_FOUND, EXIT_USAGE, EXIT_ARCHIVE, EXIT_BROKER = 1, 2, 3, 4

dlq_app = typer.Typer(help="Inspect, group, replay and discard archived dead letters.", no_args_is_help=True)
#: Wide enough for the tables when piped (Rich assumes 80 columns without a terminal).
_PIPE_WIDTH = 180
_out = Console(soft_wrap=False)
if not _out.is_terminal:
    _out = Console(soft_wrap=False, width=_PIPE_WIDTH)
_err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
StatusOpt = Annotated[str | None, typer.Option(help="dead, replayed, discarded or all. [default: dead]")]
CategoryOpt = Annotated[str | None, typer.Option(help="Error category, e.g. provider_not_found.")]
ProviderOpt = Annotated[str | None, typer.Option(help="Namespace or Namespace/ResourceType.")]
OperationOpt = Annotated[str | None, typer.Option(help="Operation, e.g. create.")]
GroupOpt = Annotated[str | None, typer.Option("--group", "--fingerprint", help="A group's fingerprint.")]
SinceOpt = Annotated[str | None, typer.Option(help="Dead-lettered since: ISO time or age (30m, 2h, 7d).")]
UntilOpt = Annotated[str | None, typer.Option(help="Dead-lettered before: ISO time or age.")]
SearchOpt = Annotated[str | None, typer.Option("--search", help="Text in the error, job id or message id.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why, for the audit log.")]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ms(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    match = _AGE.match(value.strip())
    if match:
        return int((time.time() - float(match[1]) * _UNIT_S[match[2]]) * 1000)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO time nor an age like 30m, 2h, 7d", param_hint=name
        ) from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _settings() -> Settings:
    from ..log_config import configure_logging

    settings = Settings.from_env()
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    return settings


def _who(settings: Settings) -> str:
    return settings.operator or f"{getpass.getuser()}@{socket.gethostname()}"


@contextlib.contextmanager
def _session() -> Iterator[tuple[Settings, DeadLetterArchive]]:
    """Settings and archive for one command; our errors become one line and an exit code."""
    archive: DeadLetterArchive | None = None
    try:
        settings = _settings()
        archive = DeadLetterArchive(settings.archive_url)
        yield settings, archive
    except RecordNotFound as exc:
        _fail(exc, EXIT_NOT_FOUND)
    except (InvalidJob, NotReplayable, ConfigurationError) as exc:
        _fail(exc, EXIT_USAGE)
    except ArchiveUnavailable as exc:
        _fail(exc, EXIT_ARCHIVE)
    except BrokerUnavailable as exc:
        _fail(exc, EXIT_BROKER)
    except ProviderJobsError as exc:
        _fail(exc, EXIT_ARCHIVE)
    finally:
        if archive is not None:
            archive.close()


def _fail(exc: Exception, code: int) -> None:
    _err.print(f"provider-jobs dlq: {exc}", markup=False, highlight=False)
    raise typer.Exit(code)


def _filter(  # noqa: PLR0917 - mirrors the commands' shared filter options
    status: str | None,
    category: str | None,
    provider: str | None,
    operation: str | None,
    group: str | None,
    since: str | None,
    until: str | None,
    search: str | None,
    ids: list[int] | None = None,
    default_status: str | None = DEAD,
) -> RecordFilter:
    status = status or default_status
    if status not in (None, "all", *STATUSES):
        raise typer.BadParameter(
            f"{status!r}: expected dead, replayed, discarded or all", param_hint="--status"
        )
    return RecordFilter.for_provider(
        provider,
        ids=ids or None,
        statuses=None if status in (None, "all") else [status],
        category=category,
        operation=operation,
        fingerprint=group,
        since_ms=_ms(since, "--since"),
        until_ms=_ms(until, "--until"),
        text=search,
    )


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


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


@dlq_app.command("list")
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


@dlq_app.command()
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


@dlq_app.command()
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


@dlq_app.command()
def replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Archive ids; or select with the options.")] = None,
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
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send dead letters again with a fresh attempt budget, each record once."""
    selecting = any(v is not None for v in (group, category, provider, operation, since, until, search))
    if not ids and not selecting and not all_matching:
        raise typer.BadParameter("name ids, a --group, filters, or --all")
    with _session() as (settings, archive):
        request_patch, job_patch = _json_patch(edit, "--edit"), _json_patch(edit_job, "--edit-job")
        default_status = None if force else DEAD
        chosen = ids or archive.ids(
            _filter(
                status,
                category,
                provider,
                operation,
                group,
                since,
                until,
                search,
                default_status=default_status,
            )
        )
        if not chosen:
            _err.print("No dead letter matched.")
            raise typer.Exit(EXIT_NOT_FOUND)
        replayer = Replayer(archive=archive, broker_url=settings.broker_url, who=_who(settings))
        with _progress(len(chosen), enabled=not as_json and len(chosen) > 1) as advance:
            report = replayer.replay(
                chosen,
                request_patch=request_patch,
                job_patch=job_patch,
                dry_run=dry_run,
                rate_per_s=rate,
                force=force,
                reason=reason,
                on_outcome=advance,
            )
    if as_json:
        _print_json({"elapsed_s": report.elapsed_s, "outcomes": [vars(o) for o in report.outcomes]})
    else:
        table = Table(
            title=f"{'dry run: ' if dry_run else ''}{len(report.outcomes)} record(s) in "
            f"{report.elapsed_s:.2f} s",
            title_justify="left",
        )
        for name in ("id", "outcome", "job", "queue", "new message id / detail"):
            table.add_column(name, overflow="fold")
        for o in report.outcomes:
            table.add_row(
                str(o.record_id),
                o.status,
                (o.job_id or "-")[:12],
                o.queue_name or "-",
                o.message_id or o.detail or "",
            )
        _out.print(table)
    if report.failed:
        raise typer.Exit(EXIT_BROKER)
    if not dry_run and not report.published:
        raise typer.Exit(EXIT_NOT_FOUND)


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
                progress.console.print(f"record {outcome.record_id}: {outcome.detail}", markup=False)

        yield advance


@dlq_app.command()
def discard(
    ids: Annotated[list[int] | None, typer.Argument(help="Archive ids; or select with the options.")] = None,
    *,
    reason: Annotated[str, typer.Option(help="Why (required, kept in the audit log).")] = "",
    group: GroupOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    search: SearchOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark dead letters discarded (kept in the archive, never replayed by triage)."""
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    if not ids and all(v is None for v in (group, category, provider, operation, since, until, search)):
        raise typer.BadParameter("name ids, a --group or filters")
    with _session() as (settings, archive):
        for record_id in ids or ():
            archive.get(record_id)
        changed = archive.set_status(
            _filter(None, category, provider, operation, group, since, until, search, ids=ids),
            DISCARDED,
            who=_who(settings),
            reason=reason,
            action="discard",
        )
    if as_json:
        _print_json({"discarded": changed})
    else:
        _out.print(f"Discarded {len(changed)} dead letter(s): {', '.join(map(str, changed)) or '-'}")
    if not changed:
        raise typer.Exit(EXIT_NOT_FOUND)


@dlq_app.command()
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


@dlq_app.command()
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


@dlq_app.command()
def process(
    policy_file: Annotated[str | None, typer.Option("--policy", help="TOML or JSON policy file.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Triage dead letters by policy: replay, discard, escalate (default: the built-in policy)."""
    from ..providers import ProviderRegistry, load_providers

    with _session() as (settings, archive):
        path = policy_file or settings.dlq_policy_file
        policy = DlqPolicy.load(path) if path else DEFAULT_POLICY
        registry = ProviderRegistry()
        load_providers(registry, spec=settings.providers, path=settings.providers_file)
        replayer = Replayer(archive=archive, broker_url=settings.broker_url, who=_who(settings))
        report = process_dlq(
            archive,
            policy=policy,
            replayer=replayer,
            providers=set(registry.keys()),
            dry_run=dry_run,
            who=_who(settings),
        )
    if as_json:
        _print_json(
            {
                "dry_run": dry_run,
                "decisions": [vars(d) for d in report.decisions],
                "replay": [vars(o) for o in report.replay.outcomes] if report.replay else [],
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
                str(d.record_id), (d.job_id or "-")[:12], d.category or "-", d.rule or "-", d.action, d.detail
            )
        _out.print(table)
    if report.replay is not None and report.replay.failed:
        raise typer.Exit(EXIT_BROKER)


def _serve_metrics(port: int) -> None:
    """Serve the archiver's metrics (archived, duplicates, archive up, over cap...) on ``port``."""
    from prometheus_client import REGISTRY, start_http_server

    from ..middleware.metrics import metrics_registry

    start_http_server(port, registry=metrics_registry(REGISTRY))
    _err.print(f"serving metrics on :{port}/metrics", highlight=False)


def archiver(
    until_idle: Annotated[bool, typer.Option(help="Stop once every dead-letter queue is empty.")] = False,
) -> None:
    """Drain <queue>.XQ (and PROVIDER_JOBS_ARCHIVER_QUEUES) into the archive until stopped.

    With PROVIDER_JOBS_METRICS_PORT set, serves its metrics on that port.
    """
    import signal

    from .consumer import DeadLetterArchiver

    with _session() as (settings, archive):
        worker = DeadLetterArchiver.from_settings(settings, archive=archive)
        if settings.metrics_port is not None:
            _serve_metrics(settings.metrics_port)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: worker.stop())
        stats = worker.run(until_idle=until_idle)
    _err.print(f"archived {stats.archived}, duplicates skipped {stats.duplicates}", highlight=False)
