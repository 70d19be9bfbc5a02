"""The ``/dlq/operations`` endpoints: start a bulk replay or discard as an operation stored in the
archive, list and show operations, pause, resume and cancel them, and resolve their uncertain records.

An operation started or resumed here runs in a thread of the API process and outlives the
request, following the providers' breakers as every replay does; its progress is read back
from the archive (:mod:`provider_jobs.dlq.operations`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import pydantic
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field, computed_field

from ..dlq import DEAD, DeadLetterArchive, RecordFilter
from ..dlq.archive.operations import FAILED_STATE, SKIPPED, UNCERTAIN, OperationRecord, OperationRow
from ..dlq.operations import Operations, describe_filter, operation_view
from ..health.watch import follow_breakers
from ..identity import operator_name
from ..redaction import Redactor
from ..settings import Settings
from .schemas import MAX_ID, BreakerOptions, DiscardRequest, Reason, Selection

__all__ = [
    "DiscardOperationRequest",
    "OperationModel",
    "OperationRequest",
    "ReplayOperationRequest",
    "ResolveRequest",
    "ResolvedModel",
    "operations_router",
]

OperationId = Annotated[int, Path(ge=1, le=MAX_ID)]
#: Records of the states that need a look (failed, uncertain, skipped) one operation's view lists.
_LISTED = 1000


class ReplayOperationRequest(Selection, BreakerOptions):
    """A replay of a selection, stored as an operation and run in the background; a pause or
    cancel stops it also while its records wait for a breaker."""

    action: Literal["replay"]
    reason: Reason = None
    force: bool = Field(
        default=False, strict=True, description="Also send records already replayed or discarded."
    )
    rate_per_s: float | None = Field(
        default=None, gt=0, le=100_000, description="Messages per second at most."
    )


class ResolveRequest(BaseModel):
    """What became of an operation's uncertain records, as the operator found out."""

    sent: bool = Field(
        strict=True,
        description="true: their jobs ran, mark them replayed; false: they were not sent, make them "
        "dead letters awaiting action again (any replay may then send them).",
    )
    record_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        default=None, max_length=10_000, description="Only these records; default every uncertain one."
    )
    reason: Reason = None


class ResolvedModel(BaseModel):
    """The records resolved, and the operation after."""

    resolved: list[int]
    operation: OperationModel


class DiscardOperationRequest(DiscardRequest):
    """A discard of a selection (dead letters awaiting action), stored as an operation and run in the
    background."""

    action: Literal["discard"]


#: The body of ``POST /dlq/operations``: a replay or a discard, told apart by ``action``.
OperationRequest = Annotated[ReplayOperationRequest | DiscardOperationRequest, Field(discriminator="action")]


@pydantic.dataclasses.dataclass(frozen=True, kw_only=True)
class OperationModel(OperationRow):
    """One operation: who, the selection, its state and how many records are in each state.

    The archive's own :class:`~provider_jobs.dlq.archive.operations.OperationRow` (one definition of
    an operation's fields), with what its view adds: ``settled``, ``interrupted`` and, in one
    operation's view, the records that need a look.
    """

    state: Literal["running", "paused", "done", "failed", "cancelled"]
    interrupted: bool = Field(description="Running, but the process running it is gone: it can be resumed")
    records: list[OperationRecord] | None = Field(
        default=None, description="In one operation's view: the records failed, uncertain or skipped"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def settled(self) -> int:
        """Records with a final outcome (not pending, not being sent)."""
        return super().settled


def operations_router(
    settings: Settings,
    archive: DeadLetterArchive,
    guard: Callable[..., None],
    *,
    read_guard: Callable[..., None] | None = None,
    redactor: Redactor | None = None,
    who: str | None = None,
) -> APIRouter:
    """The ``/dlq/operations`` routes on ``archive``; mutations pass ``guard``, reads ``read_guard``.

    Args:
        settings: Broker URL (replays publish there).
        archive: The dead-letter archive.
        guard: A FastAPI dependency that refuses unauthorised mutations.
        read_guard: A FastAPI dependency that refuses unauthorised reads. Default: reads are open.
        redactor: How the records' details are masked. Default: ``settings.redactor()``.
        who: The operator named in the audit log and on the operations started here.
            Default: :func:`~provider_jobs.identity.operator_name` of ``settings.operator``, else ``api``.
    """
    reads = [Depends(read_guard)] if read_guard is not None else []
    router = APIRouter(prefix="/dlq/operations", tags=["dlq"])
    operations = Operations(archive, broker_url=settings.broker_url)
    who = who or operator_name(settings.operator, default="api")
    redactor = redactor if redactor is not None else settings.redactor()
    mutation_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "No or a wrong bearer token"},
        403: {"description": "No API token is configured"},
        404: {"description": "No such operation"},
        409: {"description": "The operation's state does not allow it"},
    }

    def model(operation_id: int, *, with_records: bool = False) -> OperationModel:
        view = operation_view(operations.get(operation_id))
        if with_records:
            listed = operations.records(
                operation_id, states=[FAILED_STATE, UNCERTAIN, SKIPPED], limit=_LISTED
            )
            view["records"] = [redactor.view(r) for r in listed]
        return OperationModel(**view)

    @router.get(
        "", response_model=list[OperationModel], dependencies=reads, summary="Operations, newest first"
    )
    def list_operations(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[OperationModel]:
        return [OperationModel(**operation_view(o)) for o in operations.latest(limit=limit)]

    @router.get(
        "/{operation_id}",
        response_model=OperationModel,
        dependencies=reads,
        responses={404: {"description": "No such operation"}},
        summary="One operation, with the records it failed, skipped or cannot vouch for",
    )
    def show_operation(operation_id: OperationId) -> OperationModel:
        return model(operation_id, with_records=True)

    @router.post(
        "",
        response_model=OperationModel,
        status_code=202,
        dependencies=[Depends(guard)],
        responses={
            **mutation_responses,
            422: {"description": "Nothing selected, or no reason for a discard"},
        },
        summary="Start a replay or discard of a selection, run in the background",
    )
    def start_operation(body: OperationRequest) -> OperationModel:
        force = isinstance(body, ReplayOperationRequest) and body.force
        record_filter: RecordFilter = body.record_filter(statuses=None if force else [DEAD])
        chosen = archive.ids(record_filter)
        selection = describe_filter(record_filter)
        if isinstance(body, DiscardOperationRequest):
            op_id = operations.start_discard(chosen, who=who, selection=selection, reason=body.reason)
        else:
            op_id = operations.start_replay(
                chosen, who=who, selection=selection, reason=body.reason, force=body.force,
                rate_per_s=body.rate_per_s, max_pause_s=body.max_pause_s,
            )  # fmt: skip
        ignore = not isinstance(body, ReplayOperationRequest) or body.ignore_breaker
        operations.run_in_background(op_id, health=lambda: follow_breakers(settings, ignore=ignore))
        return model(op_id)

    @router.post(
        "/{operation_id}/pause",
        response_model=OperationModel,
        dependencies=[Depends(guard)],
        responses=mutation_responses,
        summary="Stop a running operation after its current chunk",
    )
    def pause_operation(operation_id: OperationId) -> OperationModel:
        operations.pause(operation_id)
        return model(operation_id)

    @router.post(
        "/{operation_id}/resume",
        response_model=OperationModel,
        dependencies=[Depends(guard)],
        responses=mutation_responses,
        summary="Go on with a paused, failed or interrupted operation, in the background",
    )
    def resume_operation(
        operation_id: OperationId,
        ignore_breaker: Annotated[
            bool, Query(description="Send records whose provider's circuit breaker is open too, at once.")
        ] = False,
    ) -> OperationModel:
        replay = operations.get(operation_id).action == "replay"
        operations.run_in_background(
            operation_id,
            take_over=True,
            health=lambda: follow_breakers(settings, ignore=ignore_breaker or not replay),
        )
        return model(operation_id)

    @router.post(
        "/{operation_id}/cancel",
        response_model=OperationModel,
        dependencies=[Depends(guard)],
        responses=mutation_responses,
        summary="Stop an operation for good after its current chunk",
    )
    def cancel_operation(operation_id: OperationId) -> OperationModel:
        operations.cancel(operation_id)
        return model(operation_id)

    @router.post(
        "/{operation_id}/resolve",
        response_model=ResolvedModel,
        dependencies=[Depends(guard)],
        responses={k: v for k, v in mutation_responses.items() if k != 409},
        summary="Say whether the records an interrupted operation cannot vouch for were sent",
        description="Uncertain records (claimed when the process running the operation stopped) "
        "are sent by no replay until resolved: `sent: true` marks them replayed, `sent: false` "
        "makes them dead letters awaiting action again.",
    )
    def resolve_operation(operation_id: OperationId, body: ResolveRequest) -> ResolvedModel:
        resolved = operations.resolve(
            operation_id, sent=body.sent, who=who, reason=body.reason, record_ids=body.record_ids
        )
        return ResolvedModel(resolved=resolved, operation=model(operation_id, with_records=True))

    return router
