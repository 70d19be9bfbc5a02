"""Settings: every knob of provider-jobs, declared once, read from the environment at the edge.

Each setting is one field of :class:`Settings`: its type, default, bounds and
description. ``PROVIDER_JOBS_<FIELD>`` sets it (pydantic-settings reads the
variables in :meth:`Settings.from_env`); the README's settings table is
generated from the fields (``make settings-table``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema, PydanticCustomError, core_schema
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from .errors import ConfigurationError
from .redaction import DEFAULT_REDACT_KEYS, Redactor, mask_url_password

__all__ = ["ENV_PREFIX", "Settings", "allowed_values"]

#: Every environment variable we read starts with this.
ENV_PREFIX = "PROVIDER_JOBS_"

#: Variables an earlier release read, and what replaces each: set, they are refused, not ignored.
_REPLACED = {
    "BREAKER_THRESHOLD": (
        "breakers open on a failure rate, not on failures in a row; set PROVIDER_JOBS_BREAKER_MIN_CALLS "
        "(0 turns breakers off), PROVIDER_JOBS_BREAKER_FAILURE_RATE and PROVIDER_JOBS_BREAKER_MIN_JOBS"
    ),
}

#: What a value that cannot be read as the field's type is told, by pydantic's error type.
_UNREADABLE = {
    "int_parsing": "expected an integer",
    "int_parsing_size": "expected an integer of at most 18 digits",
    "int_from_float": "expected an integer",
    "int_type": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text",
}


@dataclass(frozen=True)
class _Shape:
    """A check of a value's shape that bounds cannot state, and what it allows, in words."""

    check: Callable[[Any], bool]
    allowed: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def _validate(self, value: Any) -> Any:
        if not self.check(value):
            raise ValueError(f"expected {self.allowed}")
        return value


def _setting(
    default: Any,
    description: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    unit: str = "",
    note: str = "",
    below: str = "",
    shown: str = "",
    secret: bool = False,
) -> Any:
    """A field: ``unit`` and ``note`` word its bounds, ``below`` names a setting it stays below,
    ``shown`` stands for a default worked out at start, ``secret`` keeps the value out of reprs and errors."""
    extra: dict[str, str | bool] = {
        "unit": unit,
        "note": note,
        "below": below,
        "shown": shown,
        "secret": secret,
    }
    return Field(
        default,
        description=description,
        ge=ge,
        gt=gt,
        le=le,
        repr=not secret,
        json_schema_extra={key: value for key, value in extra.items() if value},
    )


def _short_int(value: Any) -> Any:
    # int() reads thousands of digits; no setting needs more than a few.
    if isinstance(value, str) and len(value.strip()) > 18:
        raise PydanticCustomError("int_parsing_size", "expected an integer of at most 18 digits")
    return value


def _split(text: str) -> tuple[str, ...]:
    """``text``'s comma-separated parts, stripped, the empty ones left out."""
    return tuple(filter(None, (part.strip() for part in text.split(","))))


def _names(value: Any) -> Any:
    return _split(value) if isinstance(value, str) else value


def _delays(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return dict(_delay(item) for item in _split(value))


def _delay(item: str) -> tuple[str, float]:
    name, _, text = item.partition("=")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not name.strip() or not math.isfinite(seconds):
        raise ValueError(f"{item!r} is not operation=seconds (finite seconds)")
    return name.strip(), seconds


def _level(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _amqp_urls(url: str) -> bool:
    urls = _split(url)
    return bool(urls) and all(u.startswith(("amqp://", "amqps://")) for u in urls)


def _all_match(pattern: str) -> Callable[[tuple[str, ...]], bool]:
    return lambda names: all(re.fullmatch(pattern, name) for name in names)


def _token(token: str | None) -> bool:
    return token is None or (token.isprintable() and not any(c.isspace() for c in token))


_Int = Annotated[int, BeforeValidator(_short_int)]
_Names = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_names)]
_Token = Annotated[str | None, _Shape(_token, "printable characters without spaces")]
_Delays = Annotated[
    Mapping[str, float],
    NoDecode,
    BeforeValidator(_delays),
    AfterValidator(MappingProxyType),
    _Shape(lambda delays: all(d >= 0 for d in delays.values()), "operation=seconds pairs, seconds >= 0"),
]


class Settings(BaseSettings):
    """Configuration of workers, producers and tools.

    Each field is read from ``PROVIDER_JOBS_<FIELD>`` by :meth:`from_env`; the
    constructor takes values only, and reads no environment. Each field's
    description, default and bounds are in the README's settings table.

    Raises:
        ConfigurationError: A value is not allowed; the message, one line, names the
            variable, its value and what is allowed.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, allow_inf_nan=False, extra="forbid"
    )

    broker_url: Annotated[
        str, _Shape(_amqp_urls, "an amqp:// or amqps:// URL, or several separated by commas")
    ] = _setting(
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        "RabbitMQ; several URLs separated by commas (a cluster's nodes): every client fails over in order",
    )
    queue_type: Literal["classic", "quorum"] = _setting(
        "classic", '`quorum`: replicated queues on a cluster (see "Quorum mode and RabbitMQ clusters")'
    )
    queue_name: Annotated[
        str, _Shape(lambda name: re.fullmatch(r"\S+", name) is not None, "a non-empty name without spaces")
    ] = _setting("provider.jobs", "queue of the actors (`.DQ` delays, `.XQ` dead letters)")
    max_attempts: _Int = _setting(3, "attempts in total, the first included", ge=1, unit="attempts")
    retry_delay_s: float = _setting(
        5.0, "delay before each retry", ge=0, unit="seconds", below="consumer_timeout_s"
    )
    retry_backoff: bool = _setting(False, "exponential backoff with jitter instead of a fixed delay")
    max_retry_delay_s: float = _setting(
        300.0, "backoff cap", ge=0, unit="seconds", below="consumer_timeout_s"
    )
    operation_delays_s: _Delays = _setting(
        {},
        "retry delays per operation, `create=10,get=2,delete=5`",
        below="consumer_timeout_s",
    )
    max_retry_after_s: float = _setting(
        300.0, "cap on a provider's `Retry-After`", ge=0, unit="seconds", below="consumer_timeout_s"
    )
    consumer_timeout_s: float = _setting(
        1800.0, "RabbitMQ's `consumer_timeout`; delays must stay below", gt=0, unit="seconds"
    )
    hold_retries_up_to_ms: _Int = _setting(
        1000,
        "retries due this soon are held by the worker instead of a delay queue; 0 never",
        ge=0,
        le=60_000,
        unit="ms",
    )
    max_deliveries: _Int = _setting(
        20,
        "deliveries without an outcome, whatever their cause, before a job is dead-lettered as "
        "`crash_loop`: the coarse ceiling",
        ge=1,
        le=1000,
        unit="deliveries",
    )
    max_crashes: _Int = _setting(
        3,
        "crashes of its worker counted against a job (it ran alone, as a suspect, and the process died) "
        "before it is dead-lettered as `crash_loop`",
        ge=2,
        le=1000,
        unit="crashes",
        note="a first crash only makes a suspect",
    )
    redelivery_grace_s: float = _setting(
        10.0,
        "how long a redelivery waits for another worker's announcement that it completed (its ack lost "
        "with a connection) before it runs again; 0 runs it at once",
        ge=0,
        le=60,
        unit="seconds",
    )
    unknown_errors_retryable: bool = _setting(True, "retry what no rule recognises")
    worker_id: str | None = _setting(None, "name in logs and attempt records", shown="host-pid")
    worker_threads: _Int = _setting(8, "threads per worker process", ge=1, le=1024, unit="threads")
    worker_timeout_ms: _Int = _setting(
        100, "how often idle consumers wake (Dramatiq's `.DQ` path only)", ge=10, le=60_000, unit="ms"
    )
    providers: str = _setting("", "providers as `Namespace/Type=http://base-url` pairs separated by `;`")
    providers_file: str | None = _setting(None, "a TOML or JSON file of providers")
    log_format: Literal["auto", "console", "json"] = _setting(
        "auto", "`console` / `json`; `auto`: console in a terminal, JSON otherwise"
    )
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_level)
    ] = _setting("INFO", "root log level")
    api_host: str = _setting("127.0.0.1", "address of the HTTP API")
    api_port: _Int = _setting(8001, "port of the HTTP API", ge=1, le=65_535, note="a TCP port")
    api_token: _Token = _setting(
        None,
        "the API's token: it guards mutations, reveals and, once set, the `/dlq` reads",
        secret=True,
    )
    api_read_token: _Token = _setting(None, "a second token for the `/dlq` reads only", secret=True)
    api_max_body_bytes: _Int = _setting(
        1_048_576,
        "largest request body the API reads; larger ones get 413 unread",
        ge=1024,
        le=1 << 30,
        unit="bytes",
    )
    console_user_header: Annotated[
        str | None,
        _Shape(
            lambda name: name is None or re.fullmatch(r"[A-Za-z0-9\-]{1,100}", name) is not None,
            "an HTTP header name (letters, digits, -)",
        ),
    ] = _setting(
        None,
        "a header a reverse proxy sets to the user's name (`X-Forwarded-User`): the console's audit name, "
        "instead of the one asked at login",
    )
    trace_url: Annotated[
        str | None,
        _Shape(
            lambda url: url is None or (re.match(r"https?://", url) is not None and "{trace_id}" in url),
            "an http(s) URL with {trace_id} where the trace id goes",
        ),
    ] = _setting(
        None,
        "a link to a trace in your tracing backend, `{trace_id}` where its id goes: the console's record "
        "page links trace ids there",
    )
    redact_keys: Annotated[
        _Names,
        _Shape(_all_match(r"[A-Za-z0-9_.\-]+"), "comma-separated key names (letters, digits, _ . -)"),
    ] = _setting(DEFAULT_REDACT_KEYS, 'keys whose values every view masks (see "Secrets")')
    metrics_port: _Int | None = _setting(
        None, "a worker serves `/metrics` itself", ge=1, le=65_535, note="a TCP port"
    )
    archive_url: Annotated[
        str,
        _Shape(
            lambda url: url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")),
            "a sqlite:///path or postgresql+psycopg://... URL",
        ),
    ] = _setting("sqlite:///var/provider-jobs/archive.sqlite3", "dead-letter archive")
    archive_retention_days: float = _setting(
        30.0, "records older than this are purged", gt=0, le=36_500, unit="days"
    )
    archive_max_records: _Int = _setting(
        100_000,
        "cap on archived records: above it the oldest replayed or discarded ones are evicted",
        ge=1,
        le=1_000_000_000,
        unit="records",
    )
    archiver_batch_size: _Int = _setting(200, "batch per commit", ge=1, le=10_000, unit="messages")
    archiver_flush_ms: _Int = _setting(
        200, "longest a partial batch waits before it is committed", ge=1, le=60_000, unit="ms"
    )
    archiver_queues: Annotated[
        _Names,
        _Shape(_all_match(r"\S+"), "comma-separated queue names without spaces"),
    ] = _setting((), "more queues whose XQ to drain")
    archiver_max_backoff_s: float = _setting(
        30.0, "longest wait between retries while the archive database is down", gt=0, le=3600, unit="seconds"
    )
    dlq_policy_file: str | None = _setting(None, "triage policy", shown="(built-in)")
    operator: str | None = _setting(None, "who is written to the audit log", shown="user@host")
    breaker_failure_rate: float = _setting(
        0.5,
        "share of the window's jobs failing that opens a provider's breaker",
        gt=0,
        le=1,
        unit="a share",
    )
    breaker_min_calls: _Int = _setting(
        20,
        "new jobs failing in a row that open a provider's breaker, and calls within the window before its "
        "failure rate may; 0 turns breakers off",
        ge=0,
        le=1_000_000,
        unit="calls",
        note="0 turns breakers off",
    )
    breaker_min_jobs: _Int = _setting(
        3,
        "distinct failing jobs either rule needs",
        ge=2,
        le=1_000_000,
        unit="jobs",
        note="one job never opens a breaker",
    )
    breaker_window_s: float = _setting(
        60.0, "the sliding window calls are counted in", gt=0, le=86_400, unit="seconds"
    )
    breaker_probe_interval_s: float = _setting(
        5.0, "one probe round per interval while open", gt=0, le=86_400, unit="seconds"
    )
    breaker_probe_jobs: _Int = _setting(
        3, "distinct waiting jobs a probe round lets through", ge=1, le=1000, unit="jobs"
    )
    breaker_max_wait_s: float = _setting(
        1800.0,
        "longest a job waits for an open breaker before `provider_down`",
        gt=0,
        le=7 * 86_400,
        unit="seconds",
        note="7 days",
    )
    breaker_categories: Annotated[
        _Names,
        _Shape(_all_match(r"[a-z0-9_]+"), "comma-separated category names (a-z, 0-9, _)"),
    ] = _setting(
        ("provider_not_available", "connection_error", "timeout", "service_unavailable", "busy"),
        "categories that count against a breaker",
    )
    providers_announce_s: float = _setting(
        15.0, "how often workers announce their providers and breakers", gt=0, le=86_400, unit="seconds"
    )
    recovery_replay_rate: float = _setting(
        20.0,
        "dead letters per second replayed when a provider recovers; 0 off",
        ge=0,
        le=100_000,
        unit="jobs per second",
        note="0 turns recovery replay off",
    )
    breaker_release_rate: float = _setting(
        1000.0,
        "parked jobs released per second and provider when its breaker closes; 0 parks none",
        ge=0,
        le=100_000,
        unit="jobs per second",
        note="0: jobs wait for an open breaker in the retry delay queues instead of parking",
    )

    def __init__(self, **values: Any) -> None:
        # Values only: BaseSettings' own constructor would read the environment, which from_env does.
        try:
            BaseModel.__init__(self, **values)
        except ValidationError as exc:
            raise ConfigurationError(_one_line(exc)) from None

    @model_validator(mode="after")
    def _below_their_limits(self) -> Settings:
        """Delays stay below the setting their ``below`` names (``consumer_timeout_s``)."""
        for name, info in type(self).model_fields.items():
            limit_name = _extra(info).get("below")
            if not limit_name:
                continue
            value = getattr(self, name)
            limit = getattr(self, limit_name)
            if any(v >= limit for v in (value.values() if isinstance(value, Mapping) else [value])):
                raise PydanticCustomError(
                    "not_allowed",
                    "expected {allowed} ({limit})",
                    {
                        "setting": name,
                        "value": dict(value) if isinstance(value, Mapping) else value,
                        "allowed": allowed_values(name),
                        "limit": _number(limit),
                    },
                )
        return self

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """``broker_url`` split at its commas: the URLs connections try, in order."""
        return _split(self.broker_url)

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

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``, checked as the constructor checks them.

        Raises:
            ConfigurationError: A changed value is not allowed.
        """
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``PROVIDER_JOBS_*`` variables (``os.environ`` by default); ``overrides`` win.

        Raises:
            ConfigurationError: A variable cannot be read, is not allowed, or is no longer read.
        """
        source = _Environment(cls, environ)
        for name, replacement in _REPLACED.items():
            raw = source.variables.get(ENV_PREFIX + name)
            if raw:
                raise ConfigurationError(f"{ENV_PREFIX}{name}={_shown(raw)} is no longer read: {replacement}")
        return cls(**{**source(), **overrides})


class _Environment(EnvSettingsSource):
    """pydantic-settings' reader of environment variables, over ``environ`` (``os.environ`` if None)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None) -> None:
        self.variables = {
            key: value
            for key, value in (os.environ if environ is None else environ).items()
            if key.startswith(ENV_PREFIX)
        }
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self.variables.items() if value != ""}


def _extra(info: FieldInfo) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def allowed_values(name: str) -> str:
    """What field ``name`` of :class:`Settings` allows, in words (``1 to 1024 threads``); ``""``: anything."""
    info = Settings.model_fields[name]
    extra = _extra(info)
    unit, note, below = extra.get("unit", ""), extra.get("note", ""), extra.get("below", "")
    shapes = [item.allowed for item in info.metadata if isinstance(item, _Shape)]
    bounds = {
        key: _number(getattr(item, key))
        for item in info.metadata
        for key in ("ge", "gt", "le")
        if hasattr(item, key)
    }
    choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else ()
    limit = f" and below {ENV_PREFIX}{below.upper()}" if below else ""
    if shapes:
        text = shapes[0] + limit
    elif choices:
        text = ", ".join(choices[:-1]) + f" or {choices[-1]}"
    elif info.annotation is bool:
        text = "true or false"
    elif "ge" in bounds and "le" in bounds:
        text = f"{bounds['ge']} to {bounds['le']} {unit}".rstrip()
    elif "gt" in bounds and "le" in bounds:
        text = f"{unit} > {bounds['gt']} and at most {bounds['le']}"
    elif "gt" in bounds:
        text = f"{unit} > {bounds['gt']}"
    elif "ge" in bounds:
        text = f"{unit} >= {bounds['ge']}{limit}" if below else f"{bounds['ge']} or more {unit}".rstrip()
    else:
        return ""
    return f"{text} ({note})" if note else text


def _shown(value: object) -> str:
    """``value``'s repr for an error line: URL passwords masked, at most 80 characters."""
    text = mask_url_password(repr(value))
    return text if len(text) <= 80 else f"{text[:77]}..."


def _one_line(exc: ValidationError) -> str:
    """The first of ``exc``'s errors as one line: the variable, its value, what is allowed."""
    error = exc.errors(include_url=False)[0]
    context = error.get("ctx", {})
    name = str(context.get("setting") or (error["loc"] or ("",))[0])
    if name not in Settings.model_fields:
        return f"{name!r} is not a setting of provider-jobs"
    value = context["value"] if "setting" in context else _typed(name, error["input"])
    if error["type"] in _UNREADABLE:
        value, allowed = error["input"], _UNREADABLE[error["type"]]
    elif error["type"] == "value_error":
        allowed = mask_url_password(str(context["error"]))
    elif error["type"] in {"greater_than", "greater_than_equal", "less_than_equal", "literal_error"}:
        allowed = f"expected {allowed_values(name)}"
    else:
        allowed = error["msg"]
    variable = ENV_PREFIX + name.upper()
    if _extra(Settings.model_fields[name]).get("secret"):
        return f"{variable} is not allowed: {allowed}"
    return f"{variable}={_shown(value)} is not allowed: {allowed}"


def _typed(name: str, value: Any) -> Any:
    """``value`` read as field ``name``'s type without its bounds (``'0'`` shows as ``0``), or as it came."""
    annotation = Settings.model_fields[name].annotation
    try:
        return value if annotation is None else TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        return value
