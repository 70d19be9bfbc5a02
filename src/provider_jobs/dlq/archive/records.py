"""DeadLetter: one archived dead letter, with its failure story and fingerprint, and
:func:`new_record`, the quick way to make one that every reader of a delivery takes."""

from __future__ import annotations

import dataclasses
from typing import Any

from .delivery import decode_message

__all__ = ["DeadLetter", "new_record"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One archived dead letter.

    The fields up to ``body`` come from the delivery; the rest are kept by the
    archive (``id`` is ``None`` until stored). Times are ms since the epoch.
    """

    dedupe_key: str
    message_id: str | None
    job_id: str | None
    queue_name: str | None
    source_queue: str
    actor_name: str | None
    provider_namespace: str | None
    resource_type: str | None
    operation: str | None
    request: dict[str, Any] | None
    priority: int | None
    category: str
    retryable: bool | None
    reason: str
    error_type: str | None
    error: str
    traceback: str | None
    attempts: int
    max_retries: int | None
    attempt_history: list[dict[str, Any]]
    x_death: list[dict[str, Any]] | None
    headers: dict[str, Any]
    first_enqueued_ms: int | None
    dead_lettered_ms: int
    archived_ms: int
    fingerprint: str
    body: bytes
    id: int | None = None
    status: str = "dead"
    status_reason: str | None = None
    replay_count: int = 0
    replay_message_ids: list[str] = dataclasses.field(default_factory=list)
    escalated_ms: int | None = None
    updated_ms: int | None = None

    @property
    def provider(self) -> str | None:
        """``namespace/resource_type``, or ``None`` for a record without a job."""
        if self.provider_namespace and self.resource_type:
            return f"{self.provider_namespace}/{self.resource_type}"
        return None

    def decoded_body(self) -> dict[str, Any] | None:
        """The Dramatiq message as a dict, or ``None`` if the body is not one."""
        return decode_message(self.body)[0]

    def to_dict(self, *, with_body: bool = False) -> dict[str, Any]:
        """A JSON-safe dict; the raw body is included (as text, lossy) only when asked."""
        data = dataclasses.asdict(self)
        body = data.pop("body")
        if with_body:
            data["body"] = body.decode("utf-8", errors="replace")
        data["provider"] = self.provider
        return data


#: Fields a record gets from the archive, not from its delivery, with their defaults.
_ARCHIVE_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(DeadLetter) if f.default is not dataclasses.MISSING
}
_ARCHIVE_FACTORIES = tuple(
    (f.name, f.default_factory)
    for f in dataclasses.fields(DeadLetter)
    if f.default_factory is not dataclasses.MISSING
)


def new_record(**fields: Any) -> DeadLetter:
    """``DeadLetter(**fields)``, in half the time.

    The frozen dataclass's ``__init__`` sets the record's 34 fields one
    ``object.__setattr__`` at a time, the largest single cost of reading a dead
    letter after decoding its JSON. This fills the new instance's ``__dict__``
    at once, with the same defaults; a test holds the two to the same result.
    """
    record: DeadLetter = object.__new__(DeadLetter)
    values = record.__dict__
    values.update(_ARCHIVE_DEFAULTS, **fields)
    for name, factory in _ARCHIVE_FACTORIES:
        values[name] = factory()
    return record
