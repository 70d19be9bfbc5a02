"""What the ``provider-jobs dlq`` commands share: options, session, filters and output.

The exit codes are listed in :mod:`provider_jobs.dlq.cli.app`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from ...errors import (
    ArchiveUnavailable,
    BrokerUnavailable,
    ConfigurationError,
    InvalidJob,
    NotReplayable,
    ProviderJobsError,
    RecordNotFound,
)
from ...identity import operator_name
from ...redaction import Redactor
from ...settings import Settings
from ..archive.filters import RecordFilter
from ..archive.search import SEARCH_HELP
from ..archive.store import DEAD, STATUSES, DeadLetterArchive

__all__ = [
    "EXIT_ARCHIVE",
    "EXIT_BROKER",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "MAX_RECORD_ID",
    "CategoryOpt",
    "GroupOpt",
    "IdsArg",
    "JsonOpt",
    "OperationOpt",
    "ProviderOpt",
    "ReasonOpt",
    "RecordIdArg",
    "SearchOpt",
    "SinceOpt",
    "StatusOpt",
    "UntilOpt",
]

EXIT_NOT_FOUND, EXIT_USAGE, EXIT_ARCHIVE, EXIT_BROKER = 1, 2, 3, 4
#: Largest archive id accepted, as the API's: above 2**63 the database driver overflows.
MAX_RECORD_ID = 2**53
#: Longest text a filter option takes.
_MAX_FILTER_CHARS = 1000

#: Wide enough for the tables when piped (Rich assumes 80 columns without a terminal).
_PIPE_WIDTH = 180
_out = Console(soft_wrap=False)
if not _out.is_terminal:
    _out = Console(soft_wrap=False, width=_PIPE_WIDTH)
_err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
StatusOpt = Annotated[
    str | None, typer.Option(help="dead, replayed, discarded, uncertain or all. [default: dead]")
]
CategoryOpt = Annotated[str | None, typer.Option(help="Error category, e.g. provider_not_found.")]
ProviderOpt = Annotated[str | None, typer.Option(help="Namespace or Namespace/ResourceType.")]
OperationOpt = Annotated[str | None, typer.Option(help="Operation, e.g. create.")]
GroupOpt = Annotated[str | None, typer.Option("--group", "--fingerprint", help="A group's fingerprint.")]
SinceOpt = Annotated[str | None, typer.Option(help="Dead-lettered since: ISO time or age (30m, 2h, 7d).")]
UntilOpt = Annotated[str | None, typer.Option(help="Dead-lettered before: ISO time or age.")]
SearchOpt = Annotated[str | None, typer.Option("--search", help=SEARCH_HELP)]
ReasonOpt = Annotated[str | None, typer.Option(help="Why, for the audit log.")]
RecordIdArg = Annotated[int, typer.Argument(min=1, max=MAX_RECORD_ID, help="Archive id.")]
#: Archive ids as arguments; an id named twice counts once.
IdsArg = Annotated[
    list[int] | None,
    typer.Argument(min=1, max=MAX_RECORD_ID, help="Archive ids; or select with the options."),
]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ms(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    match = _AGE.match(value.strip())
    if match:
        # An age older than the epoch is the epoch: the archive's times are not negative.
        return max(int((time.time() - min(float(match[1]) * _UNIT_S[match[2]], time.time())) * 1000), 0)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO time nor an age like 30m, 2h, 7d", param_hint=name
        ) from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        # A time no calendar holds (a producer's bogus timestamp) is shown as it is stored.
        return f"{ms} ms"


def _settings(service_name: str = "provider-jobs-dlq") -> Settings:
    from ...log_config import configure_logging
    from ...tracing import configure_tracing

    settings = Settings.from_env()
    configure_logging(
        log_format=settings.log_format, level=settings.log_level, redact_keys=settings.redact_keys
    )
    # A replay's send spans, from the standard OTEL_* variables (off when none is set).
    configure_tracing(service_name=service_name)
    return settings


def _who(settings: Settings) -> str:
    return operator_name(settings.operator)


@contextlib.contextmanager
def _session(service_name: str = "provider-jobs-dlq") -> Iterator[tuple[Settings, DeadLetterArchive]]:
    """Settings and archive for one command; our errors become one line and an exit code.

    Args:
        service_name: The process's ``service.name`` in traces, unless ``OTEL_SERVICE_NAME`` says.
    """
    archive: DeadLetterArchive | None = None
    try:
        settings = _settings(service_name)
        archive = DeadLetterArchive(settings.archive_url, redact_keys=settings.redact_keys)
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
    # One line, whatever the error says: its text may quote stored data.
    line = " ".join(Redactor().text(str(exc)).split())
    _err.print(f"provider-jobs dlq: {line}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _check_text(value: str | None, name: str) -> None:
    """Refuse option text that no archive can be asked about (PostgreSQL refuses NUL)."""
    if value is None:
        return
    if "\x00" in value:
        raise typer.BadParameter("must not contain a NUL character", param_hint=name)
    if len(value) > _MAX_FILTER_CHARS:
        raise typer.BadParameter(f"longer than {_MAX_FILTER_CHARS} characters", param_hint=name)


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
    for value, name in (
        (status, "--status"),
        (category, "--category"),
        (provider, "--provider"),
        (operation, "--operation"),
        (group, "--group"),
        (since, "--since"),
        (until, "--until"),
        (search, "--search"),
    ):
        _check_text(value, name)
    status = status or default_status
    if status not in (None, "all", *STATUSES):
        raise typer.BadParameter(
            f"{status!r}: expected dead, replayed, discarded, uncertain or all", param_hint="--status"
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


def _resume_hint(operation_id: int) -> str:
    """How to go on with an operation that stopped."""
    return f"`provider-jobs dlq operations resume {operation_id}` goes on"
