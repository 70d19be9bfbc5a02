"""The DLQ endpoints: list, show and group archived dead letters; replay or discard them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from ..dlq import (
    DEAD,
    DeadLetterArchive,
    Group,
    RecordFilter,
    Replayer,
    ReplayOutcome,
    ReplayReport,
)
from ..dlq.archive.operations import DISCARDED_STATE
from ..dlq.archive.search import SEARCH_HELP
from ..dlq.operations import Operations, describe_filter
from ..dlq.replay.gate import PauseHandler, ProviderHealth
from ..dlq.replay.message import unstorable
from ..health.watch import follow_breakers
from ..redaction import Redactor
from ..settings import Settings
from ..tracing import trace_ids
from .auth import check_token

__all__ = ["discard_records", "dlq_router", "replay_records"]

Status = Literal["dead", "replayed", "discarded"]
#: Largest archive id accepted: integers above 2**53 do not survive JSON as numbers,
#: and above 2**63 they overflow the database driver.
MAX_ID = 2**53
RecordId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _no_nul(value: Any) -> Any:
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
_NO_NUL: dict[str, Any] = {"pattern": "^[^\u0000]*$"}
#: A filter's text: no NUL, at most 1000 characters.
FilterText = Annotated[str | None, Query(max_length=1000, json_schema_extra=_NO_NUL), AfterValidator(_no_nul)]


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


class _Selection(BaseModel):
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
        AfterValidator(_no_nul),
        WithJsonSchema(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": 1000,
                "description": "A group's fingerprint.",
                **_NO_NUL,
            }
        ),
    ] = Field(default=None, min_length=1, max_length=1000, strict=True)
    category: Annotated[
        str | None,
        AfterValidator(_no_nul),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 1000, **_NO_NUL}),
    ] = Field(default=None, min_length=1, max_length=1000, strict=True)

    @model_validator(mode="after")
    def _selects_something(self) -> _Selection:
        if self.ids is None and self.group is None and self.category is None:
            raise ValueError("name ids, a group or a category")
        return self

    def record_filter(self, *, statuses: list[str] | None) -> RecordFilter:
        return RecordFilter(ids=self.ids, statuses=statuses, fingerprint=self.group, category=self.category)


def replay_records(
    archive: DeadLetterArchive,
    *,
    broker_url: str,
    who: str,
    ids: list[int] | None = None,
    record_filter: RecordFilter | None = None,
    request_patch: dict[str, Any] | None = None,
    job_patch: dict[str, Any] | None = None,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    rate_per_s: float | None = None,
    on_outcome: Callable[[ReplayOutcome], None] | None = None,
    health: ProviderHealth | None = None,
    max_pause_s: float | None = None,
    on_pause: PauseHandler | None = None,
) -> ReplayReport:
    """Replay the records ``ids``, or those of ``record_filter``, as an operation stored in the
    archive (a dry run is not one): what ``POST /dlq/replay`` and the console's replays do.

    Args:
        archive: The dead-letter archive.
        broker_url: RabbitMQ URL to publish to.
        who: Name written to the audit log.
        ids: Archive ids; when ``None``, every record ``record_filter`` selects, oldest first.
        record_filter: Which records, when ``ids`` is ``None``.
        request_patch: JSON merge patch for each request.
        job_patch: JSON merge patch for each job (``{"priority": 9}``).
        dry_run: Plan and report; send and change nothing.
        force: Also replay records already replayed or discarded.
        reason: Why, for the audit log.
        rate_per_s: Messages per second at most. Default: as fast as confirms allow.
        on_outcome: Called with each record's outcome as it is settled (progress).
        health: Providers' breakers (:func:`~provider_jobs.health.follow_breakers`): a paused
            provider's records wait for it. Default ``None``: every record goes at once.
        max_pause_s: Longest they wait before they are skipped. Default: until it resumes.
        on_pause: Told when a provider's records start waiting, and when they go again.

    Raises:
        RecordNotFound, InvalidJob, NotReplayable, BrokerUnavailable: As :meth:`Replayer.replay`.
    """
    record_filter = record_filter or RecordFilter(statuses=[DEAD])
    chosen = ids if ids is not None else archive.ids(record_filter)
    if dry_run:
        replayer = Replayer(archive=archive, broker_url=broker_url, who=who)
        return replayer.replay(
            chosen, request_patch=request_patch, job_patch=job_patch, dry_run=True, force=force
        )
    # Stored as an operation (:mod:`provider_jobs.dlq.operations`), which outlives this process.
    _, report = Operations(archive, broker_url=broker_url).replay(
        chosen,
        who=who,
        selection={"ids": len(chosen)} if ids is not None else describe_filter(record_filter),
        on_outcome=on_outcome,
        health=health,
        on_pause=on_pause,
        request_patch=request_patch,
        job_patch=job_patch,
        force=force,
        reason=reason,
        rate_per_s=rate_per_s,
        max_pause_s=max_pause_s,
    )
    return report


def discard_records(
    archive: DeadLetterArchive, record_filter: RecordFilter, *, who: str, reason: str
) -> list[int]:
    """Mark the dead letters awaiting action that ``record_filter`` selects discarded, audited,
    as an operation stored in the archive: what ``POST /dlq/discard`` and the console's discards do.

    Records already replayed or discarded stay as they are, as the CLI leaves them.

    Returns:
        The ids discarded.

    Raises:
        RecordNotFound: One of the filter's ``ids`` is not in the archive.
    """
    for record_id in record_filter.ids if record_filter.ids is not None else ():
        archive.get(record_id)
    record_filter = dataclasses.replace(record_filter, statuses=[DEAD])
    chosen = archive.ids(record_filter)
    if not chosen:
        return []
    # Stored as an operation (:mod:`provider_jobs.dlq.operations`), as every bulk discard is.
    operations = Operations(archive, broker_url="")
    op_id = operations.start_discard(chosen, who=who, selection=describe_filter(record_filter), reason=reason)
    operations.run(op_id)
    return [r.record_id for r in operations.records(op_id, states=[DISCARDED_STATE], limit=len(chosen))]


class ReplayRequest(_Selection):
    """Which records to replay and how; each is sent once with a fresh attempt budget."""

    reason: Annotated[str | None, AfterValidator(_no_nul)] = Field(
        default=None, max_length=1000, strict=True, json_schema_extra=_NO_NUL
    )
    force: bool = Field(
        default=False, strict=True, description="Also replay records already replayed or discarded."
    )
    dry_run: bool = Field(default=False, strict=True)
    ignore_breaker: bool = Field(
        default=False,
        strict=True,
        description="Send records whose provider's circuit breaker is open too, at once. By default "
        "they wait until it closes while the others go, and the response lists the pause.",
    )
    max_pause_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="Longest a paused provider's records wait before they are skipped (0: at once); "
        "default: until its breaker closes.",
    )
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


class DiscardRequest(_Selection):
    """Which records to discard, and why (kept in the audit log)."""

    reason: Annotated[str, AfterValidator(_no_nul)] = Field(
        min_length=1,
        max_length=1000,
        pattern=r"\S",
        strict=True,
        json_schema_extra={"not": {"pattern": "\u0000"}},
    )


class DiscardResponse(BaseModel):
    """The ids discarded."""

    discarded: list[int]


def dlq_router(
    settings: Settings,
    archive: DeadLetterArchive,
    guard: Callable[..., None],
    *,
    read_guard: Callable[..., None] | None = None,
    redactor: Redactor | None = None,
) -> APIRouter:
    """The ``/dlq`` routes on ``archive``; mutations pass ``guard`` first, reads ``read_guard``.

    Every record, group and audit entry is shown through ``redactor``: secret
    values masked, size capped. ``GET /dlq/records/{id}?reveal=true`` shows the
    secrets to a caller with the mutation token, and writes the reveal to the audit log.

    Args:
        settings: Broker URL (replays publish there), operator name for the audit log, tokens.
        archive: The dead-letter archive.
        guard: A FastAPI dependency that refuses unauthorised mutations.
        read_guard: A FastAPI dependency that refuses unauthorised reads. Default: reads are open.
        redactor: How views are masked and capped. Default: ``settings.redactor()``.
    """
    reads = [Depends(read_guard)] if read_guard is not None else []
    router = APIRouter(prefix="/dlq", tags=["dlq"])
    who = settings.operator or "api"
    redactor = redactor if redactor is not None else settings.redactor()

    def record_view(record: Any, *, with_body: bool = False, reveal: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = redactor.view(record, reveal=reveal, omit=() if with_body else ("body",))
        data["provider"] = record.provider
        return data

    read_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "A token is configured and the request has none of them"}
    }

    @router.get(
        "/records",
        response_model=RecordPage,
        dependencies=reads,
        responses=read_responses,
        summary="Archived dead letters, newest first",
    )
    def list_records(
        *,
        status: Status | None = None,
        category: FilterText = None,
        provider: Annotated[
            str | None,
            Query(
                description="Namespace or Namespace/ResourceType", max_length=1000, json_schema_extra=_NO_NUL
            ),
            AfterValidator(_no_nul),
        ] = None,
        operation: FilterText = None,
        group: Annotated[
            str | None,
            Query(description="A group's fingerprint", max_length=1000, json_schema_extra=_NO_NUL),
            AfterValidator(_no_nul),
        ] = None,
        search: Annotated[
            str | None,
            Query(
                description=SEARCH_HELP,
                max_length=1000,
                json_schema_extra=_NO_NUL,
            ),
            AfterValidator(_no_nul),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> RecordPage:
        record_filter = RecordFilter.for_provider(
            provider,
            statuses=[status] if status else None,
            category=category,
            operation=operation,
            fingerprint=group,
            text=search,
        )
        records = archive.find(record_filter, limit=limit, offset=offset)
        return RecordPage(
            total=archive.count(record_filter),
            records=[RecordModel.model_validate(record_view(r)) for r in records],
        )

    @router.get(
        "/records/{record_id}",
        response_model=RecordModel,
        dependencies=reads,
        responses={
            **read_responses,
            403: {"description": "reveal=true without the mutation token"},
            404: {"description": "No such record"},
        },
        summary="One dead letter's whole failure story and audit log",
    )
    def show_record(
        record_id: RecordId,
        request: Request,
        reveal: Annotated[
            bool,
            Query(
                description="Show secret values unmasked; needs the mutation token, "
                "and is written to the audit log."
            ),
        ] = False,
    ) -> RecordModel:
        if reveal:
            refused = check_token(
                request.headers.get("authorization"),
                accepted=[settings.api_token],
                read_only=settings.api_read_token,
            )
            if refused is not None:
                raise refused.exception()
        record = archive.get(record_id)
        if reveal:
            archive.write_audit(who=who, action="reveal", record_id=record_id, details={"via": "api"})
        audit = [redactor.view(entry) for entry in archive.audit(record_id=record_id)]
        body = record.decoded_body()
        trace_id, replay_of_trace_id = trace_ids(body.get("options") if body else None)
        return RecordModel.model_validate(
            {
                **record_view(record, with_body=True, reveal=reveal),
                "audit": audit,
                "trace_id": trace_id,
                "replay_of_trace_id": replay_of_trace_id,
            }
        )

    @router.get(
        "/groups",
        response_model=list[Group],
        dependencies=reads,
        responses=read_responses,
        summary="Dead letters grouped by cause",
    )
    def groups(
        status: Status = "dead",
        category: FilterText = None,
        provider: Annotated[
            str | None,
            Query(
                description="Namespace or Namespace/ResourceType", max_length=1000, json_schema_extra=_NO_NUL
            ),
            AfterValidator(_no_nul),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[Group]:
        record_filter = RecordFilter.for_provider(provider, statuses=[status], category=category)
        # The archive's own dataclass is the response model: one definition of a group.
        return [Group(**redactor.view(group)) for group in archive.groups(record_filter, limit=limit)]

    @router.post(
        "/replay",
        response_model=ReplayResponse,
        dependencies=[Depends(guard)],
        responses={
            401: {"description": "No or a wrong bearer token"},
            403: {"description": "No API token is configured"},
            404: {"description": "A named record does not exist"},
            422: {"description": "Nothing selected, or an edit makes a job invalid"},
        },
        summary="Send dead letters again with a fresh attempt budget",
        description="The records of a provider whose circuit breaker is open (or whose Retry-After "
        "is pending) wait until it closes while the others go, and the response lists each such "
        "pause; the request lasts until then, unless `max_pause_s` or `ignore_breaker` says otherwise.",
    )
    def replay(body: ReplayRequest) -> ReplayResponse:
        statuses = None if body.force else [DEAD]
        ids = body.ids if body.group is None and body.category is None else None
        with follow_breakers(settings, ignore=body.ignore_breaker or body.dry_run) as health:
            report = replay_records(
                archive,
                broker_url=settings.broker_url,
                who=who,
                ids=ids,
                record_filter=body.record_filter(statuses=statuses),
                request_patch=body.request_patch,
                dry_run=body.dry_run,
                force=body.force,
                reason=body.reason,
                health=health,
                max_pause_s=body.max_pause_s,
            )
        return ReplayResponse(
            published=report.published,
            failed=report.failed,
            paused=[PauseModel(**pause.as_dict()) for pause in report.pauses],
            outcomes=[ReplayOutcome(**redactor.view(outcome)) for outcome in report.outcomes],
        )

    @router.post(
        "/discard",
        response_model=DiscardResponse,
        dependencies=[Depends(guard)],
        responses={
            401: {"description": "No or a wrong bearer token"},
            403: {"description": "No API token is configured"},
            404: {"description": "A named record does not exist"},
        },
        summary="Mark dead letters discarded: kept, never replayed by triage",
    )
    def discard(body: DiscardRequest) -> DiscardResponse:
        changed = discard_records(archive, body.record_filter(statuses=[DEAD]), who=who, reason=body.reason)
        return DiscardResponse(discarded=changed)

    return router
