"""The HTTP API: queue statistics, metrics, health and readiness."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import FastAPI, Header, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..actors.broker import check_broker
from ..errors import BrokerUnavailable
from ..middleware.metrics import render_metrics
from ..settings import Settings
from .exposition import api_registry
from .queue_stats import read_queue_stats

__all__ = ["create_app"]


class QueueStatModel(BaseModel):
    """One queue: messages ready for delivery and consumers attached."""

    name: str
    role: Literal["work", "delay", "dead_letter"]
    exists: bool
    messages_ready: int = Field(ge=0)
    consumers: int = Field(ge=0)


class QueueStatsModel(BaseModel):
    """The work queue, its delay queue (``.DQ``) and its dead-letter queue (``.XQ``)."""

    queues: list[QueueStatModel]


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


def create_app(settings: Settings) -> FastAPI:
    """The provider-jobs API for one broker and queue.

    Args:
        settings: Broker URL, queue name and API token.
    """
    app = FastAPI(
        title="provider-jobs",
        summary="Queue statistics, metrics and dead-letter operations of provider-jobs.",
        version="0.1.0",
    )
    registry = api_registry(settings)

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
        summary="RabbitMQ (and the archive) can be reached",
    )
    def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            check_broker(settings, timeout_s=2.0)
            checks["broker"] = "ok"
        except BrokerUnavailable as exc:
            checks["broker"] = str(exc)
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
        summary="Messages ready and consumers of the work, delay and dead-letter queues",
    )
    def queue_stats() -> QueueStatsModel | JSONResponse:
        try:
            stats = read_queue_stats(settings)
        except BrokerUnavailable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
        return QueueStatsModel(queues=[QueueStatModel(**vars(stat)) for stat in stats])

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
