"""``provider-jobs api``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
import uvicorn

from ..log_config import configure_logging
from ..settings import Settings
from .app import create_app

__all__ = ["api_command", "serve"]

logger = logging.getLogger("provider_jobs.api")


def serve(settings: Settings) -> None:
    """Serve the API on ``settings.api_host``:``settings.api_port`` until interrupted.

    Args:
        settings: Bind address, broker and API token.
    """
    if not settings.api_token:
        logger.warning("No API token is set (PROVIDER_JOBS_API_TOKEN): mutating endpoints answer 403")
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)


def api_command(
    host: Annotated[str | None, typer.Option(help="Bind address (PROVIDER_JOBS_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (PROVIDER_JOBS_API_PORT).")] = None,
) -> None:
    """Serve the HTTP API: /queue-stats, /metrics, /healthz, /readyz and the DLQ endpoints."""
    overrides: dict[str, Any] = {"api_host": host, "api_port": port}
    settings = Settings.from_env(**{name: value for name, value in overrides.items() if value is not None})
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    serve(settings)
