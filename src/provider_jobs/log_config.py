"""configure_logging: one structlog set-up that also renders stdlib logs (Dramatiq's, ours)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

from .redaction import DEFAULT_REDACT_KEYS, Redactor
from .tracing.logs import add_trace_ids

__all__ = ["configure_logging"]


def configure_logging(
    *, log_format: str = "auto", level: str = "INFO", redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS
) -> None:
    """Route structlog and stdlib logging through one renderer on stderr.

    A line written while an OpenTelemetry span is active names it (``trace_id``,
    ``span_id``). Every line is masked on its way out: values of secret keys, URL passwords
    and secret ``key=value`` pairs in messages and tracebacks (see
    :class:`~provider_jobs.redaction.Redactor`).

    Args:
        log_format: ``console`` (coloured key=value), ``json`` (one object a
            line), or ``auto``: console in a terminal, JSON otherwise.
        level: Root log level name. Default ``INFO``.
        redact_keys: Key names whose values are masked. Default
            :data:`~provider_jobs.redaction.DEFAULT_REDACT_KEYS`.
    """
    redactor = Redactor(keys=redact_keys)
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Any]
    if log_format == "json":
        renderer = [structlog.processors.dict_tracebacks, redactor, structlog.processors.JSONRenderer()]
    else:
        # The traceback is rendered to text before the redactor, so that it is masked too.
        renderer = [
            structlog.processors.format_exc_info,
            redactor,
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # pika narrates every connection at INFO.
    logging.getLogger("pika").setLevel(logging.WARNING)
    handler.addFilter(_expected_absence)


def _expected_absence(record: logging.LogRecord) -> bool:
    """Drop pika's WARNING for a passive declare of a queue that does not exist yet.

    Queue statistics and the idle wait look queues up passively; a retry delay
    queue exists only once a retry used it, so on a fresh broker its absence is
    expected, and the caller reports it (``"exists": false``).
    """
    return not (record.name.startswith("pika.") and "NOT_FOUND - no queue" in record.getMessage())
