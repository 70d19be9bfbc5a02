"""The HTTP API: queue statistics, metrics, health, readiness and the DLQ endpoints."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..dlq import DeadLetterArchive
from ..dlq.summary import summarise_archive
from ..errors import (
    ArchiveError,
    ArchiveUnavailable,
    BrokerUnavailable,
    InvalidJob,
    NotReplayable,
    ProviderJobsError,
    RecordConflict,
    RecordNotFound,
)
from ..extras import installed
from ..identity import operator_name
from ..middleware.metrics import render_metrics
from ..rabbitmq.connectivity import check_broker
from ..rabbitmq.queue_stats import read_queue_stats
from ..redaction import Redactor
from ..settings import Settings
from .archive_stats import ArchiveCollector
from .auth import bearer_token_guard, check_token, read_token_guard
from .dlq import dlq_router
from .exposition import api_registry
from .gate import RequestGate
from .operations import operations_router
from .providers import ProviderModel, providers_router, read_providers

__all__ = ["create_app"]


class QueueStatModel(BaseModel):
    """One queue: messages ready for delivery and consumers attached."""

    name: str
    role: Literal["work", "delay", "retry", "dead_letter"]
    exists: bool
    messages_ready: int = Field(ge=0)
    consumers: int = Field(ge=0)


class ArchiveStatsModel(BaseModel):
    """The dead-letter archive: records by status, those awaiting action by category, the oldest."""

    by_status: dict[str, int]
    awaiting_by_category: dict[str, int]
    oldest_awaiting_ms: int | None
    oldest_awaiting_age_s: float | None


class QueueStatsModel(BaseModel):
    """The work queue, its delay queue (``.DQ``) and its dead-letter queue (``.XQ``), and the archive.

    ``archive`` is null, and ``archive_error`` says why, when the archive cannot be read.
    """

    queues: list[QueueStatModel]
    archive: ArchiveStatsModel | None
    archive_error: str | None = None
    #: Each provider's circuit breaker, as ``GET /providers`` shows it; null when unreadable.
    providers: list[ProviderModel] | None = None


class ProblemModel(BaseModel):
    """Why the request could not be served."""

    detail: str


class HealthModel(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class ReadinessModel(BaseModel):
    """Each dependency's state: ``ok`` or why it is not usable."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


#: HTTP status for each of our errors an endpoint lets out; the first match wins.
_ERROR_STATUS: tuple[tuple[type[ProviderJobsError], int], ...] = (
    (RecordNotFound, status.HTTP_404_NOT_FOUND),
    (RecordConflict, status.HTTP_409_CONFLICT),
    (InvalidJob, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (NotReplayable, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ArchiveUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (BrokerUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ArchiveError, status.HTTP_500_INTERNAL_SERVER_ERROR),
)


def _error_handlers(redactor: Redactor) -> tuple[Any, Any]:
    """Handlers answering our errors, and invalid requests, with masked texts."""

    def error_response(request: Request, exc: Exception) -> JSONResponse:
        code = next((code for kind, code in _ERROR_STATUS if isinstance(exc, kind)), 500)
        return JSONResponse({"detail": redactor.view(str(exc))}, status_code=code)

    def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        # The field and the problem, never the value sent: it may be a secret (the
        # whole body, for an error about the body as a whole).
        assert isinstance(exc, RequestValidationError)
        problems = [
            {
                "loc": list(error.get("loc", ())),
                "msg": redactor.view(error.get("msg", "")),
                "type": error.get("type"),
            }
            for error in exc.errors()
        ]
        return JSONResponse({"detail": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    return error_response, invalid_request


def create_app(settings: Settings, *, archive: DeadLetterArchive | None = None) -> FastAPI:
    """The provider-jobs API for one broker, queue and archive.

    Args:
        settings: Broker URL, queue name, archive URL and API token.
        archive: The dead-letter archive. Defaults to one on ``settings.archive_url``,
            opened at the first request that needs it.

    The console is served under ``/ui/`` when its extra (``provider-jobs[console]``) is installed.
    """
    app = FastAPI(
        title="provider-jobs",
        summary="Queue statistics, metrics and dead-letter operations of provider-jobs.",
        version="0.1.0",
    )
    archive = (
        archive
        if archive is not None
        else DeadLetterArchive(settings.archive_url, redact_keys=settings.redact_keys)
    )
    registry = api_registry(settings, ArchiveCollector(archive))
    redactor = settings.redactor()
    error_response, invalid_request = _error_handlers(redactor)
    for kind, _ in _ERROR_STATUS:
        app.add_exception_handler(kind, error_response)
    app.add_exception_handler(RequestValidationError, invalid_request)
    guard = bearer_token_guard(settings.api_token, read_token=settings.api_read_token)
    # With no token configured reads are open, and the schema says so.
    read_guard = (
        read_token_guard(settings.api_token, settings.api_read_token)
        if settings.api_token or settings.api_read_token
        else None
    )
    # The operator in the audit log of every mutation made through the API.
    who = operator_name(settings.operator, default="api")
    for routes in (dlq_router, operations_router):
        app.include_router(
            routes(settings, archive, guard, read_guard=read_guard, redactor=redactor, who=who)
        )
    app.include_router(providers_router(settings))
    if installed("console"):
        # Imported here: the console builds on this package's helpers, so it imports ``api`` itself.
        from ..console import install_console

        install_console(app, settings, archive, redactor)
    # Outermost: a mutation's token and a body's size are checked before the body is read.
    app.add_middleware(
        RequestGate,
        max_body_bytes=settings.api_max_body_bytes,
        authorize=lambda authorization, path: (
            check_token(authorization, accepted=[settings.api_token], read_only=settings.api_read_token)
            if path.startswith("/dlq/")
            else None
        ),
    )

    @app.get(
        "/healthz",
        response_model=HealthModel,
        summary="The process is alive",
    )
    def healthz() -> HealthModel:
        return HealthModel(status="ok")

    @app.get(
        "/readyz",
        response_model=ReadinessModel,
        responses={503: {"model": ReadinessModel, "description": "A dependency is unavailable"}},
        summary="RabbitMQ and the archive can be reached",
    )
    def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            check_broker(settings.broker_url, timeout_s=2.0)
            checks["broker"] = "ok"
        except BrokerUnavailable as exc:
            checks["broker"] = redactor.text(str(exc))
        try:
            archive.check()
            checks["archive"] = "ok"
        except ArchiveError as exc:
            checks["archive"] = redactor.text(str(exc))
        ready = all(value == "ok" for value in checks.values())
        body = ReadinessModel(status="ready" if ready else "unavailable", checks=checks)
        return JSONResponse(
            body.model_dump(),
            status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @app.get(
        "/queue-stats",
        response_model=QueueStatsModel,
        responses={503: {"model": ProblemModel, "description": "RabbitMQ cannot be reached"}},
        summary="Messages ready and consumers of the work, delay and dead-letter queues; archive counts",
    )
    def queue_stats() -> QueueStatsModel | JSONResponse:
        try:
            stats = read_queue_stats(settings)
        except BrokerUnavailable as exc:
            return JSONResponse(
                {"detail": redactor.text(str(exc))}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
            )
        queues = [QueueStatModel(**vars(stat)) for stat in stats]
        try:
            providers: list[ProviderModel] | None = read_providers(settings).providers
        except BrokerUnavailable:
            providers = None
        try:
            summary = summarise_archive(archive)
        except ArchiveError as exc:
            return QueueStatsModel(
                queues=queues, archive=None, archive_error=redactor.text(str(exc)), providers=providers
            )
        oldest_ms = summary.oldest_awaiting_ms
        return QueueStatsModel(
            queues=queues,
            providers=providers,
            archive=ArchiveStatsModel(
                by_status=summary.by_status,
                awaiting_by_category=summary.awaiting_by_category,
                oldest_awaiting_ms=oldest_ms,
                oldest_awaiting_age_s=None
                if oldest_ms is None
                else round(max(time.time() - oldest_ms / 1000, 0), 3),
            ),
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus or OpenMetrics text"}},
        summary="Prometheus metrics",
    )
    def metrics(accept: Annotated[str | None, Header()] = None) -> Response:
        body, content_type = render_metrics(registry, accept)
        return Response(body, media_type=content_type)

    return app
