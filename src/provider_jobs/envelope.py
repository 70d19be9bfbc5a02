"""MessageEnvelope: the fields of a Dramatiq message around its job, checked before anything trusts them.

Dramatiq's worker takes a decoded message's fields as they come. An ``options``
that is not an object, a ``throws`` option, a ``retries`` that is a string or a
``queue_name`` its worker does not consume makes the worker thread raise after
the message was acked (the job is lost and the thread dies), or makes our
middleware fail where a failure means an ack. A message is checked against
:class:`MessageEnvelope` where it is decoded, by the worker's encoder and by the
archiver alike, so that both give the same reason for refusing it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .json_bodies import read_json

__all__ = [
    "MAX_TIMESTAMP_MS",
    "QUEUE_NAME_PATTERN",
    "SHORTSTR_MAX_BYTES",
    "MessageEnvelope",
    "MessageOptions",
    "envelope_problem",
    "misdelivery",
    "read_message",
    "shortstr_or_none",
]

#: Longest AMQP short string, in UTF-8 bytes: ``message_id`` goes into one.
SHORTSTR_MAX_BYTES = 255
#: Dramatiq's rule for queue names (``dramatiq.actor``), which also keeps them AMQP short strings.
QUEUE_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9._-]*$"
#: The latest ``message_timestamp`` taken: the end of year 9999, in ms since the epoch.
MAX_TIMESTAMP_MS = 253_402_300_799_999
#: Errors named in a reason; a message wrong in many ways is told by its first ones.
_ERRORS_NAMED = 3


def shortstr_or_none(value: Any) -> str | None:
    """``value`` if it can be an AMQP short string (text of at most 255 UTF-8 bytes), else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \\ud800 escape can carry
        return None
    return value if len(encoded) <= SHORTSTR_MAX_BYTES else None


def _shortstr(value: str) -> str:
    if shortstr_or_none(value) is None:
        raise ValueError("must be UTF-8 text of at most 255 bytes (an AMQP short string)")
    return value


_Count = Annotated[int, Field(ge=0)]
_Ms = Annotated[int, Field(ge=0)]


class MessageOptions(BaseModel):
    """The options Dramatiq or our middleware compute with; any other option is kept as it is.

    Each is optional; ``null`` means unset where Dramatiq reads it with ``or``.
    """

    model_config = ConfigDict(strict=True, extra="allow")

    broker_priority: Annotated[int, Field(ge=0, le=255)] | None = None
    eta: _Ms | None = None
    retries: _Count | None = None
    max_retries: _Count | None = None
    max_age: _Ms | None = None
    time_limit: _Ms | None = None
    min_backoff: _Ms | None = None
    max_backoff: _Ms | None = None
    retry_delay_ms: _Ms | None = None
    retry_backoff: bool | None = None
    requeue_timestamp: _Ms | None = None
    attempt_history: list[Any] | None = None
    dead_letter: dict[str, Any] | None = None
    # JSON cannot name an exception class or a callable; the worker thread dies on anything else here.
    throws: None = None
    retry_when: None = None
    on_success: str | None = None
    on_failure: str | None = None
    on_retry_exhausted: str | None = None
    pipe_target: dict[str, Any] | None = None
    pipe_ignore: bool | None = None
    notify_shutdown: bool | None = None


class MessageEnvelope(BaseModel):
    """A Dramatiq message as its JSON body holds it: exactly these seven fields, each of its type.

    ``message_timestamp`` is in ms since the epoch; ``message_id`` becomes the
    AMQP ``message_id`` of retries and dead letters, so it is a short string.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    queue_name: Annotated[str, Field(pattern=QUEUE_NAME_PATTERN, max_length=SHORTSTR_MAX_BYTES)]
    actor_name: Annotated[str, Field(min_length=1, max_length=SHORTSTR_MAX_BYTES)]
    args: list[Any]
    kwargs: dict[str, Any]
    options: MessageOptions
    message_id: Annotated[str, Field(min_length=1), AfterValidator(_shortstr)]
    message_timestamp: Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS)]


def envelope_problem(data: Any) -> str | None:
    """What is wrong with ``data`` (a decoded JSON body) as a Dramatiq message, or ``None``.

    The answer names the fields at fault and the JSON type found, never their values.
    """
    if not isinstance(data, dict):
        return f"the body is {_json_type(data)}, not an object"
    try:
        MessageEnvelope.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        named = "; ".join(_describe(error) for error in errors[:_ERRORS_NAMED])
        more = len(errors) - _ERRORS_NAMED
        return named + (f"; and {more} more" if more > 0 else "")
    return None


def read_message(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``body`` read as a Dramatiq message, or ``None`` and why it is not one.

    The worker's encoder and the archiver both read bodies with this, so that
    the reason the archive gives is the reason the worker refused the message.
    """
    try:
        data = read_json(body)
    except UnicodeDecodeError as exc:
        return None, f"body is not UTF-8 text: {exc}"
    except ValueError as exc:
        return None, f"body is not JSON: {exc}"
    except RecursionError:
        return None, "body is JSON nested too deeply to read"
    problem = envelope_problem(data)
    if problem is not None:
        return None, f"body is not a Dramatiq message: {problem}"
    return data, None


def misdelivery(queue_name: str, delivered_on: str) -> str | None:
    """Why a message naming ``queue_name`` must not run from queue ``delivered_on``, or ``None``.

    Dramatiq's worker settles a message with the consumer of the queue the
    message *names*: the worker thread dies on a queue it does not consume, and
    another queue's consumer would settle a delivery that is not its own.
    """
    if queue_name == delivered_on:
        return None
    return f"queue_name {queue_name!r} is not the queue it was delivered from ({delivered_on!r})"


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unexpected field {location!r}"
    if kind == "missing":
        return f"missing field {location!r}"
    found = _json_type(error["input"])
    if kind in {"model_type", "dict_type"}:
        return f"{location} must be an object, not {found}"
    if kind == "list_type":
        return f"{location} must be an array, not {found}"
    if kind == "none_required":
        return f"{location} must be null or absent, not {found}"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Input ", "String "):
        message = message.removeprefix(prefix)
    return f"{location} {message[0].lower()}{message[1:]} (found {found})"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
