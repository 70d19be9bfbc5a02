"""The DLQ endpoints: list, show and group archived dead letters; replay or discard them.

Routes only: their bodies are in :mod:`.schemas`, and a replay or discard is
:func:`~provider_jobs.dlq.replay_records` / :func:`~provider_jobs.dlq.discard_records`,
as the CLI's and the console's are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator

from ..dlq import (
    DEAD,
    DeadLetterArchive,
    Group,
    RecordFilter,
    ReplayOutcome,
    discard_records,
    replay_records,
)
from ..dlq.archive.search import SEARCH_HELP
from ..health.watch import follow_breakers
from ..identity import operator_name
from ..redaction import Redactor
from ..settings import Settings
from ..tracing import trace_ids
from .auth import check_token
from .schemas import (
    NO_NUL,
    DiscardRequest,
    DiscardResponse,
    FilterText,
    PauseModel,
    RecordId,
    RecordModel,
    RecordPage,
    ReplayRequest,
    ReplayResponse,
    Status,
    no_nul,
)

__all__ = ["dlq_router"]


def dlq_router(
    settings: Settings,
    archive: DeadLetterArchive,
    guard: Callable[..., None],
    *,
    read_guard: Callable[..., None] | None = None,
    redactor: Redactor | None = None,
    who: str | None = None,
) -> APIRouter:
    """The ``/dlq`` routes on ``archive``; mutations pass ``guard`` first, reads ``read_guard``.

    Every record, group and audit entry is shown through ``redactor``: secret
    values masked, size capped. ``GET /dlq/records/{id}?reveal=true`` shows the
    secrets to a caller with the mutation token, and writes the reveal to the audit log.

    Args:
        settings: Broker URL (replays publish there), tokens.
        archive: The dead-letter archive.
        guard: A FastAPI dependency that refuses unauthorised mutations.
        read_guard: A FastAPI dependency that refuses unauthorised reads. Default: reads are open.
        redactor: How views are masked and capped. Default: ``settings.redactor()``.
        who: The operator named in the audit log and on the operations started here.
            Default: :func:`~provider_jobs.identity.operator_name` of ``settings.operator``, else ``api``.
    """
    reads = [Depends(read_guard)] if read_guard is not None else []
    router = APIRouter(prefix="/dlq", tags=["dlq"])
    who = who or operator_name(settings.operator, default="api")
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
                description="Namespace or Namespace/ResourceType", max_length=1000, json_schema_extra=NO_NUL
            ),
            AfterValidator(no_nul),
        ] = None,
        operation: FilterText = None,
        group: Annotated[
            str | None,
            Query(description="A group's fingerprint", max_length=1000, json_schema_extra=NO_NUL),
            AfterValidator(no_nul),
        ] = None,
        search: Annotated[
            str | None,
            Query(
                description=SEARCH_HELP,
                max_length=1000,
                json_schema_extra=NO_NUL,
            ),
            AfterValidator(no_nul),
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
                description="Namespace or Namespace/ResourceType", max_length=1000, json_schema_extra=NO_NUL
            ),
            AfterValidator(no_nul),
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
            _, report = replay_records(
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
