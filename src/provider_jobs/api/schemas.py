"""The bodies of the ``/dlq`` endpoints: records and pages of them, selections of records, and
the replay and discard requests and responses, with the limits every caller is held to."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from ..dlq import RecordFilter, ReplayOutcome
from ..dlq.replay.message import unstorable

__all__ = [
    "MAX_ID",
    "NO_NUL",
    "BreakerOptions",
    "DiscardRequest",
    "DiscardResponse",
    "FilterText",
    "PauseModel",
    "Reason",
    "RecordId",
    "RecordModel",
    "RecordPage",
    "ReplayRequest",
    "ReplayResponse",
    "Selection",
    "Status",
    "no_nul",
]

Status = Literal["dead", "replayed", "discarded", "uncertain"]
#: Largest archive id accepted: integers above 2**53 do not survive JSON as numbers,
#: and above 2**63 they overflow the database driver.
MAX_ID = 2**53
RecordId = Annotated[int, Path(ge=1, le=MAX_ID)]


def no_nul(value: Any) -> Any:
    """Refuse text no archive can store or search (NUL, lone surrogates), at any depth."""
    problem = unstorable(value)
    if problem is not None:
        raise ValueError(f"must not contain {problem}")
    return value


def _integral(value: Any) -> Any:
    """``2.0`` as ``2`` (JSON Schema counts it an integer); ``true`` and ``"2"`` stay, to be refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: JSON Schema's word for "no NUL character".
NO_NUL: dict[str, Any] = {"pattern": "^[^\u0000]*$"}
#: Why, for the audit log (optional): no NUL, at most 1000 characters.
Reason = Annotated[
    Annotated[StrictStr, Field(max_length=1000)] | None,
    AfterValidator(no_nul),
    Field(json_schema_extra=NO_NUL, description="Why, for the audit log."),
]
#: A filter's text: no NUL, at most 1000 characters.
FilterText = Annotated[str | None, Query(max_length=1000, json_schema_extra=NO_NUL), AfterValidator(no_nul)]


class RecordModel(BaseModel):
    """One archived dead letter (``GET /dlq/records/{id}`` adds its audit log)."""

    model_config = ConfigDict(extra="allow")

    id: int
    status: Status
    job_id: str | None
    message_id: str | None
    queue_name: str | None
    provider: str | None
    operation: str | None
    category: str
    reason: str
    error: str
    attempts: int
    dead_lettered_ms: int
    fingerprint: str
    trace_id: str | None = Field(
        default=None, description="The job's trace id (OpenTelemetry), in one record's view"
    )
    replay_of_trace_id: str | None = Field(
        default=None, description="For a replayed job, the trace id of the job it replays"
    )


class RecordPage(BaseModel):
    """One page of records, newest first."""

    total: int = Field(ge=0)
    records: list[RecordModel]


class Selection(BaseModel):
    # Null is not accepted for a field (it is simply left out), and at least one
    # of them must be given: both are in the schema, so clients see the rule.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [{"required": ["ids"]}, {"required": ["group"]}, {"required": ["category"]}]
        },
    )

    ids: Annotated[
        list[Annotated[int, BeforeValidator(_integral), Field(strict=True, ge=1, le=MAX_ID)]] | None,
        WithJsonSchema(
            {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "minItems": 1,
             "maxItems": 10_000}
        ),
    ] = Field(default=None, min_length=1, max_length=10_000)  # fmt: skip
    group: Annotated[
        str | None,
        AfterValidator(no_nul),
        WithJsonSchema(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": 1000,
                "description": "A group's fingerprint.",
                **NO_NUL,
            }
        ),
    ] = Field(default=None, min_length=1, max_length=1000, strict=True)
    category: Annotated[
        str | None,
        AfterValidator(no_nul),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 1000, **NO_NUL}),
    ] = Field(default=None, min_length=1, max_length=1000, strict=True)

    @model_validator(mode="after")
    def _selects_something(self) -> Selection:
        if self.ids is None and self.group is None and self.category is None:
            raise ValueError("name ids, a group or a category")
        return self

    def record_filter(self, *, statuses: list[str] | None) -> RecordFilter:
        return RecordFilter(ids=self.ids, statuses=statuses, fingerprint=self.group, category=self.category)


class BreakerOptions(BaseModel):
    """How a replay treats the records of a provider whose circuit breaker is open."""

    ignore_breaker: bool = Field(
        default=False,
        strict=True,
        description="Send records whose provider's circuit breaker is open too, at once. By default "
        "they wait until it closes while the others go, and the pause is listed.",
    )
    max_pause_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="Longest a paused provider's records wait before they are skipped (0: at once); "
        "default: until its breaker closes.",
    )


class ReplayRequest(Selection, BreakerOptions):
    """Which records to replay and how; each is sent once with a fresh attempt budget."""

    reason: Reason = None
    force: bool = Field(
        default=False, strict=True, description="Also replay records already replayed or discarded."
    )
    dry_run: bool = Field(default=False, strict=True)
    # JSON columns store a NUL (escaped) and lone surrogates; only text columns cannot.
    request_patch: dict[str, Any] | None = Field(
        default=None, description="JSON merge patch for each request."
    )


class PauseModel(BaseModel):
    """A provider whose records waited: since when (epoch seconds) and why."""

    provider: str
    since: float
    reason: Literal["down", "retry_after"]
    until: float | None = Field(description="When a Retry-After ends (epoch seconds)")
    description: str = Field(examples=["ITL.Core/ResourceGroup down since 12:03"])


class ReplayResponse(BaseModel):
    """Each record's outcome, and each provider whose records waited for its breaker."""

    published: int
    failed: int
    paused: list[PauseModel] = Field(default_factory=list)
    # The replayer's own dataclass: one definition of an outcome.
    outcomes: list[ReplayOutcome]


class DiscardRequest(Selection):
    """Which records to discard, and why (kept in the audit log)."""

    reason: Annotated[str, AfterValidator(no_nul)] = Field(
        min_length=1,
        max_length=1000,
        pattern=r"\S",
        strict=True,
        json_schema_extra={"not": {"pattern": "\u0000"}},
    )


class DiscardResponse(BaseModel):
    """The ids discarded."""

    discarded: list[int]
