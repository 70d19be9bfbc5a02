"""``GET /providers``: the providers running workers serve and their circuit breakers,
read from the health stream (see :mod:`provider_jobs.health`)."""

from __future__ import annotations

from typing import Any

import pika.exceptions
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..errors import BrokerUnavailable
from ..health import read_directory
from ..settings import Settings

__all__ = ["ProviderModel", "ProvidersModel", "providers_router", "read_providers"]


class WorkerSeenModel(BaseModel):
    """A worker serving the provider, and when it last announced it (epoch seconds)."""

    worker: str
    last_seen: float


class ProviderModel(BaseModel):
    """One provider: who serves it and its circuit breaker."""

    provider: str
    registered: bool
    healthy: bool
    state: str
    failures: int
    next_probe_at: float | None
    retry_after_until: float | None
    workers: list[WorkerSeenModel]
    breaker: dict[str, Any] | None


class ProvidersModel(BaseModel):
    """Every provider known; ``complete`` is false when the stream was not read to its end in time."""

    providers: list[ProviderModel]
    complete: bool


def read_providers(settings: Settings, *, timeout_s: float = 2.0) -> ProvidersModel:
    """The providers and breakers the health stream knows now.

    Raises:
        BrokerUnavailable: RabbitMQ cannot be reached.
    """
    try:
        directory, complete = read_directory(settings, timeout_s=timeout_s)
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"Cannot read the health stream: {type(exc).__name__}") from exc
    return ProvidersModel(
        providers=[ProviderModel(**entry.as_dict()) for entry in directory.entries()], complete=complete
    )


def providers_router(settings: Settings) -> APIRouter:
    """The router serving ``GET /providers``."""
    router = APIRouter()

    @router.get(
        "/providers",
        response_model=ProvidersModel,
        responses={503: {"description": "RabbitMQ cannot be reached"}},
        summary="Providers registered by running workers, who serves them, and their circuit breakers",
    )
    def providers() -> ProvidersModel | JSONResponse:
        try:
            return read_providers(settings)
        except BrokerUnavailable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)

    return router
