"""Settings: every knob of provider-jobs, read once from the environment at the edge."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, TypeVar

from .errors import ConfigurationError
from .redaction import DEFAULT_REDACT_KEYS, Redactor, mask_url_password

__all__ = ["ENV_PREFIX", "Settings"]

#: Every environment variable we read starts with this.
ENV_PREFIX = "PROVIDER_JOBS_"

_T = TypeVar("_T")

#: Variables an earlier release read, and what replaces each: set, they are refused, not ignored.
_REPLACED = {
    "BREAKER_THRESHOLD": (
        "breakers open on a failure rate, not on failures in a row; set PROVIDER_JOBS_BREAKER_MIN_CALLS "
        "(0 turns breakers off), PROVIDER_JOBS_BREAKER_FAILURE_RATE and PROVIDER_JOBS_BREAKER_MIN_JOBS"
    ),
}


def _parse_delays(text: str) -> Mapping[str, float]:
    delays: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r} is not operation=seconds")
        delays[name.strip()] = float(value)
    return MappingProxyType(delays)


def _shown(value: object) -> str:
    """``value``'s repr for an error line: URL passwords masked, at most 80 characters."""
    text = mask_url_password(repr(value))
    return text if len(text) <= 80 else f"{text[:77]}..."


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_int(text: str) -> int:
    # int() reads thousands of digits; no setting needs more than a few.
    if len(text.strip()) > 18:
        raise ValueError("expected an integer of at most 18 digits")
    return int(text)


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (part.strip() for part in text.split(","))))


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration of workers, producers and tools.

    Every field is read from ``PROVIDER_JOBS_<FIELD>`` by :meth:`from_env`.

    Args:
        broker_url: RabbitMQ URL, or several separated by commas (the nodes of a
            cluster): connections try them in order and fail over to the next.
            Default ``amqp://guest:guest@127.0.0.1:5672/%2F``.
        queue_type: ``classic`` or ``quorum`` (replicated over a cluster's nodes;
            see :mod:`.rabbitmq.queue_types`). Default ``classic``.
        queue_name: Queue the provider-operation actors use. Default ``provider.jobs``.
        max_attempts: Attempts per job in total, the first included
            (``ProviderWorker``'s ``max_retries``). Default 3.
        retry_delay_s: Delay before each retry in seconds. Default 5.0.
        retry_backoff: Grow the delay exponentially (with jitter) instead of
            keeping it fixed. Default ``False``.
        max_retry_delay_s: Cap on a backed-off delay. Default 300.
        operation_delays_s: Per-operation retry delays, as
            ``create=10,get=2,delete=5`` in the environment. Default none.
        max_retry_after_s: Cap on a provider's ``Retry-After``. Default 300.
        consumer_timeout_s: RabbitMQ's ``consumer_timeout``; delays must stay
            below it. Default 1800.
        hold_retries_up_to_ms: A retry due within this many ms is held by the
            worker that ran the attempt (the job stays unacked in RabbitMQ) and
            run again when due, instead of going through a delay queue. 0 never
            holds. Default 1000.
        max_deliveries: Deliveries of one job without an outcome, whatever
            their cause (a crash, a lost connection), before it is dead-lettered
            as ``crash_loop``: the coarse ceiling. Default 20 (RabbitMQ 4's own
            for quorum queues).
        redelivery_grace_s: How long a redelivered job waits for another worker's
            announcement that it completed there (its ack lost with a connection)
            before it runs again; 0 runs it at once. Default 10 (a stream is readable
            again a few seconds after RabbitMQ restarts).
        max_crashes: Crashes of its worker process counted against one job
            (deliveries that ended without an outcome while it ran alone in its
            process) before it is dead-lettered as ``crash_loop``: the precise
            limit; at least 2. Default 3.
        unknown_errors_retryable: Retry errors no rule recognises. Default ``True``.
        worker_id: Name of this worker in logs and attempt records. Default ``host-pid``.
        worker_threads: Worker threads per process. Default 8.
        worker_timeout_ms: How often idle consumers wake, which bounds how late a
            due retry can be. Default 100.
        providers: Providers as ``Namespace/Type=http://base-url`` pairs
            separated by ``;``. Default none.
        providers_file: A TOML or JSON file of providers. Default none.
        log_format: ``auto`` (console in a terminal, JSON otherwise), ``console`` or ``json``.
        log_level: Root log level. Default ``INFO``.
        api_host: Address ``provider-jobs api`` binds. Default ``127.0.0.1``.
        api_port: Port of ``provider-jobs api``. Default 8001.
        api_token: Bearer token the API's mutating endpoints require; with
            none set they are refused (403). With it set, the read endpoints
            under ``/dlq`` need it (or ``api_read_token``) too. Default none.
        api_read_token: A bearer token for the API's read endpoints only. Default none.
        api_max_body_bytes: Largest request body the API reads; larger ones are
            refused with 413 before they are read. Default 1 MiB.
        console_user_header: A request header a reverse proxy sets to the signed-in
            user's name (``X-Forwarded-User``); the console's audit name is taken from
            it instead of being asked at login. Default none.
        trace_url: A link to a trace in your tracing backend, with ``{trace_id}``
            where the trace id goes (``https://tempo.example/trace/{trace_id}``);
            the console's record page links its trace ids there. Default none.
        redact_keys: Key names whose values every view masks (CLI, API, logs,
            webhooks), comma-separated; matched case-insensitively at any depth,
            as a part of the key's name. Default :data:`~.redaction.DEFAULT_REDACT_KEYS`.
        metrics_port: Port a worker serves ``/metrics`` on. Default none (not served).
        archive_url: Dead-letter archive database: ``sqlite:///path`` (relative
            to the working directory; the directory is created when the archive
            is opened) or ``postgresql+psycopg://user@host/db``. Default
            ``sqlite:///var/provider-jobs/archive.sqlite3``.
        archive_retention_days: Archived records older than this are purged by
            the archiver. Default 30.
        archive_max_records: Cap on archived records: above it the oldest
            replayed or discarded records are evicted, and unhandled dead
            letters are kept with a warning. Default 100 000.
        archiver_batch_size: Dead letters committed (then acked) together. Default 200.
        archiver_flush_ms: Longest a partial batch waits before it is committed. Default 200.
        archiver_queues: Other queues whose ``<queue>.XQ`` the archiver drains,
            comma-separated. Default none.
        archiver_max_backoff_s: Longest wait between retries while the archive
            database is down. Default 30.
        dlq_policy_file: TOML or JSON triage policy for ``dlq process``;
            default: the built-in policy.
        operator: Name written to the DLQ audit log. Default ``user@host``.
        breaker_failure_rate: Share of a provider's jobs failing with a health
            category (provider not available, connection, timeout, service
            unavailable, busy) within ``breaker_window_s`` that opens its circuit
            breaker; 0 < rate <= 1. Default 0.5.
        breaker_min_calls: Health failures in a row that open a provider's
            breaker, and calls within ``breaker_window_s`` before its failure
            rate may; 0 turns breakers off. Default 20.
        breaker_min_jobs: Distinct failing jobs within ``breaker_window_s`` before
            a breaker may open; at least 2, so that one job never opens one. Default 3.
        breaker_window_s: The sliding window calls are counted in. Default 60.
        breaker_probe_interval_s: Seconds between probe rounds of an open breaker. Default 5.
        breaker_probe_jobs: Distinct waiting jobs a probe round lets through. Default 3.
        breaker_max_wait_s: Longest a job waits for an open breaker before it is
            dead-lettered as ``provider_down``. Default 1800.
        breaker_categories: Error categories that count against a breaker,
            comma-separated. Default the five above.
        providers_announce_s: How often a worker announces its providers and
            breakers to other processes. Default 15.
        recovery_replay_rate: Dead letters replayed per second when a provider
            recovers; 0 turns recovery replay off. Default 20.

    Raises:
        ConfigurationError: A value is not allowed; the message names the
            variable, its value and what is allowed.
    """

    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue_type: str = "classic"
    queue_name: str = "provider.jobs"
    max_attempts: int = 3
    retry_delay_s: float = 5.0
    retry_backoff: bool = False
    max_retry_delay_s: float = 300.0
    operation_delays_s: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    max_retry_after_s: float = 300.0
    consumer_timeout_s: float = 1800.0
    hold_retries_up_to_ms: int = 1000
    max_deliveries: int = 20
    max_crashes: int = 3
    redelivery_grace_s: float = 10.0
    unknown_errors_retryable: bool = True
    worker_id: str | None = None
    worker_threads: int = 8
    worker_timeout_ms: int = 100
    providers: str = ""
    providers_file: str | None = None
    log_format: str = "auto"
    log_level: str = "INFO"
    api_host: str = "127.0.0.1"
    api_port: int = 8001
    api_token: str | None = field(default=None, repr=False)
    api_read_token: str | None = field(default=None, repr=False)
    api_max_body_bytes: int = 1_048_576
    console_user_header: str | None = None
    trace_url: str | None = None
    redact_keys: tuple[str, ...] = DEFAULT_REDACT_KEYS
    metrics_port: int | None = None
    archive_url: str = "sqlite:///var/provider-jobs/archive.sqlite3"
    archive_retention_days: float = 30.0
    archive_max_records: int = 100_000
    archiver_batch_size: int = 200
    archiver_flush_ms: int = 200
    archiver_queues: tuple[str, ...] = ()
    archiver_max_backoff_s: float = 30.0
    dlq_policy_file: str | None = None
    operator: str | None = None
    breaker_failure_rate: float = 0.5
    breaker_min_calls: int = 20
    breaker_min_jobs: int = 3
    breaker_window_s: float = 60.0
    breaker_probe_interval_s: float = 5.0
    breaker_probe_jobs: int = 3
    breaker_max_wait_s: float = 1800.0
    breaker_categories: tuple[str, ...] = (
        "provider_not_available",
        "connection_error",
        "timeout",
        "service_unavailable",
        "busy",
    )
    providers_announce_s: float = 15.0
    recovery_replay_rate: float = 20.0

    def __post_init__(self) -> None:
        def refuse(name: str, allowed: str) -> None:
            raise ConfigurationError(
                f"{ENV_PREFIX}{name.upper()}={_shown(getattr(self, name))} is not allowed: {allowed}"
            )

        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                refuse(item.name, "expected a finite number")
        if not self.broker_urls or not all(u.startswith(("amqp://", "amqps://")) for u in self.broker_urls):
            refuse("broker_url", "expected an amqp:// or amqps:// URL, or several separated by commas")
        if self.queue_type not in {"classic", "quorum"}:
            refuse("queue_type", "expected classic or quorum")
        if not self.queue_name or any(c.isspace() for c in self.queue_name):
            refuse("queue_name", "expected a non-empty name without spaces")
        if self.max_attempts < 1:
            refuse("max_attempts", "expected 1 or more attempts")
        if self.consumer_timeout_s <= 0:
            refuse("consumer_timeout_s", "expected seconds > 0")
        limit = f"expected seconds >= 0 and below consumer_timeout_s ({self.consumer_timeout_s:g})"
        for name in ("retry_delay_s", "max_retry_delay_s", "max_retry_after_s"):
            if not 0 <= getattr(self, name) < self.consumer_timeout_s:
                refuse(name, limit)
        if any(not 0 <= d < self.consumer_timeout_s for d in self.operation_delays_s.values()):
            refuse("operation_delays_s", limit)
        if not 0 <= self.hold_retries_up_to_ms <= 60_000:
            refuse("hold_retries_up_to_ms", "expected 0 to 60000 ms")
        self._check_redeliveries(refuse)
        if not 1 <= self.worker_threads <= 1024:
            refuse("worker_threads", "expected 1 to 1024 threads")
        if not 10 <= self.worker_timeout_ms <= 60_000:
            refuse("worker_timeout_ms", "expected 10 to 60000 ms")
        if self.log_format not in {"auto", "console", "json"}:
            refuse("log_format", "expected auto, console or json")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            refuse("log_level", "expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
        for name in ("api_port", "metrics_port"):
            if getattr(self, name) is not None and not 1 <= getattr(self, name) <= 65_535:
                refuse(name, "expected a TCP port, 1 to 65535")
        if not self.archive_url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            refuse("archive_url", "expected a sqlite:///path or postgresql+psycopg://... URL")
        if not 0 < self.archive_retention_days <= 36_500:
            refuse("archive_retention_days", "expected days > 0 and at most 36500")
        if not 1 <= self.archive_max_records <= 1_000_000_000:
            refuse("archive_max_records", "expected 1 to 1000000000 records")
        self._check_api_and_views(refuse)
        if not 1 <= self.archiver_batch_size <= 10_000:
            refuse("archiver_batch_size", "expected 1 to 10000 messages")
        if not 1 <= self.archiver_flush_ms <= 60_000:
            refuse("archiver_flush_ms", "expected 1 to 60000 ms")
        if any(not q or any(c.isspace() for c in q) for q in self.archiver_queues):
            refuse("archiver_queues", "expected comma-separated queue names without spaces")
        if not 0 < self.archiver_max_backoff_s <= 3600:
            refuse("archiver_max_backoff_s", "expected seconds > 0 and at most 3600")
        self._check_health(refuse)

    def _check_redeliveries(self, refuse: Callable[[str, str], None]) -> None:
        """The limits on redeliveries (split out of ``__post_init__`` for size)."""
        if not 1 <= self.max_deliveries <= 1000:
            refuse("max_deliveries", "expected 1 to 1000 deliveries")
        if not 2 <= self.max_crashes <= 1000:
            refuse("max_crashes", "expected 2 to 1000 crashes (a first crash only makes a suspect)")
        if not 0 <= self.redelivery_grace_s <= 60:
            refuse("redelivery_grace_s", "expected 0 to 60 seconds")

    def _check_health(self, refuse: Callable[[str, str], None]) -> None:
        """The circuit breakers' and the recovery's settings (split out of ``__post_init__`` for size)."""
        if not 0 < self.breaker_failure_rate <= 1:
            refuse("breaker_failure_rate", "expected a share above 0 and at most 1")
        if not 0 <= self.breaker_min_calls <= 1_000_000:
            refuse("breaker_min_calls", "expected 0 (off) to 1000000 calls")
        if not 2 <= self.breaker_min_jobs <= 1_000_000:
            refuse("breaker_min_jobs", "expected 2 to 1000000 jobs (one job never opens a breaker)")
        if not 1 <= self.breaker_probe_jobs <= 1000:
            refuse("breaker_probe_jobs", "expected 1 to 1000 jobs")
        for name in ("breaker_window_s", "breaker_probe_interval_s", "providers_announce_s"):
            if not 0 < getattr(self, name) <= 86_400:
                refuse(name, "expected seconds > 0 and at most 86400")
        if not 0 < self.breaker_max_wait_s <= 7 * 86_400:
            refuse("breaker_max_wait_s", "expected seconds > 0 and at most 604800 (7 days)")
        if any(not re.fullmatch(r"[a-z0-9_]+", name) for name in self.breaker_categories):
            refuse("breaker_categories", "expected comma-separated category names (a-z, 0-9, _)")
        if not 0 <= self.recovery_replay_rate <= 100_000:
            refuse("recovery_replay_rate", "expected 0 (off) to 100000 jobs per second")

    def _check_api_and_views(self, refuse: Callable[[str, str], None]) -> None:
        """The API's and the views' settings (split out of ``__post_init__`` for size)."""
        if not 1024 <= self.api_max_body_bytes <= 1 << 30:
            refuse("api_max_body_bytes", "expected 1024 to 1073741824 bytes")
        if any(not re.fullmatch(r"[A-Za-z0-9_.\-]+", key) for key in self.redact_keys):
            refuse("redact_keys", "expected comma-separated key names (letters, digits, _ . -)")
        if self.console_user_header is not None and not re.fullmatch(
            r"[A-Za-z0-9\-]{1,100}", self.console_user_header
        ):
            refuse("console_user_header", "expected an HTTP header name (letters, digits, -)")
        if self.trace_url is not None and not (
            re.match(r"https?://", self.trace_url) and "{trace_id}" in self.trace_url
        ):
            refuse("trace_url", "expected an http(s) URL with {trace_id} where the trace id goes")
        for name in ("api_token", "api_read_token"):
            token = getattr(self, name)
            if token is not None and (not token.isprintable() or any(c.isspace() for c in token)):
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()} is not allowed: expected printable characters without spaces"
                )

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """``broker_url`` split at its commas: the URLs connections try, in order."""
        return tuple(filter(None, (part.strip() for part in self.broker_url.split(","))))

    @property
    def max_retries(self) -> int:
        """Dramatiq's ``max_retries``: retries after the first attempt."""
        return self.max_attempts - 1

    @property
    def archived_queues(self) -> tuple[str, ...]:
        """Queues whose ``<queue>.XQ`` the archiver drains: ``queue_name`` first, then ``archiver_queues``."""
        return tuple(dict.fromkeys((self.queue_name, *self.archiver_queues)))

    def redactor(self) -> Redactor:
        """The :class:`~.redaction.Redactor` every view uses: ``redact_keys`` masked."""
        return Redactor(keys=self.redact_keys)

    def delay_s_for(self, operation: str) -> float:
        """The retry delay for ``operation``: its own, or ``retry_delay_s``."""
        return self.operation_delays_s.get(operation, self.retry_delay_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``PROVIDER_JOBS_*`` variables; ``overrides`` win.

        Raises:
            ConfigurationError: A variable cannot be parsed or is not allowed.
        """
        env = os.environ if environ is None else environ
        parsers: dict[str, Callable[[str], Any]] = {
            "broker_url": str,
            "queue_type": str,
            "queue_name": str,
            "max_attempts": _parse_int,
            "retry_delay_s": _parse_float,
            "retry_backoff": _parse_bool,
            "max_retry_delay_s": _parse_float,
            "operation_delays_s": _parse_delays,
            "max_retry_after_s": _parse_float,
            "consumer_timeout_s": _parse_float,
            "hold_retries_up_to_ms": _parse_int,
            "max_deliveries": _parse_int,
            "max_crashes": _parse_int,
            "redelivery_grace_s": _parse_float,
            "unknown_errors_retryable": _parse_bool,
            "worker_id": str,
            "worker_threads": _parse_int,
            "worker_timeout_ms": _parse_int,
            "providers": str,
            "providers_file": str,
            "log_format": str,
            "log_level": str,
            "api_host": str,
            "api_port": _parse_int,
            "api_token": str,
            "api_read_token": str,
            "api_max_body_bytes": _parse_int,
            "console_user_header": str,
            "trace_url": str,
            "redact_keys": _parse_names,
            "metrics_port": _parse_int,
            "archive_url": str,
            "archive_retention_days": _parse_float,
            "archive_max_records": _parse_int,
            "archiver_batch_size": _parse_int,
            "archiver_flush_ms": _parse_int,
            "archiver_queues": _parse_names,
            "archiver_max_backoff_s": _parse_float,
            "dlq_policy_file": str,
            "operator": str,
            "breaker_failure_rate": _parse_float,
            "breaker_min_calls": _parse_int,
            "breaker_min_jobs": _parse_int,
            "breaker_window_s": _parse_float,
            "breaker_probe_interval_s": _parse_float,
            "breaker_probe_jobs": _parse_int,
            "breaker_max_wait_s": _parse_float,
            "breaker_categories": _parse_names,
            "providers_announce_s": _parse_float,
            "recovery_replay_rate": _parse_float,
        }
        for name, replacement in _REPLACED.items():
            if env.get(ENV_PREFIX + name):
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name}={_shown(env[ENV_PREFIX + name])} is no longer read: {replacement}"
                )
        values: dict[str, Any] = {}
        for name, parse in parsers.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()}={_shown(raw)} is not allowed: {mask_url_password(str(exc))}"
                ) from None
        values.update(overrides)
        return cls(**values)
