"""``provider-jobs api``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import logging
import socket
from typing import Annotated, Any

import typer
import uvicorn

from ..dlq import DeadLetterArchive
from ..errors import ArchiveUnavailable, ArchiveVersionError, ConfigurationError
from ..log_config import configure_logging
from ..settings import Settings
from ..tracing import configure_tracing
from .app import create_app

__all__ = ["EXIT_ADDRESS_IN_USE", "EXIT_ARCHIVE_VERSION", "EXIT_CONFIGURATION", "api_command", "serve"]

logger = logging.getLogger("provider_jobs.api")

#: ``provider-jobs api`` exit code: a setting or option is not allowed.
EXIT_CONFIGURATION = 2
#: ``provider-jobs api`` exit code: the address cannot be bound (in use, or not permitted).
#: Not uvicorn's 3, which the DLQ commands use for an unreachable archive.
EXIT_ADDRESS_IN_USE = 5
#: ``provider-jobs api`` exit code: the archive needs ``provider-jobs archive upgrade``, or is
#: newer than this version.
EXIT_ARCHIVE_VERSION = 6


class _AddressUnavailable(ConfigurationError):
    """The API's address cannot be bound."""


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``.

    Raises:
        ConfigurationError: The address cannot be bound; the message says why.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigurationError(f"API address {host!r} cannot be resolved: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise _AddressUnavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    """Serve the API on ``settings.api_host``:``settings.api_port`` until interrupted.

    The address is bound first, so that a port in use is reported as such.

    Args:
        settings: Bind address, broker and API token.

    Raises:
        ConfigurationError: The address cannot be bound.
        ArchiveVersionError: The archive needs ``provider-jobs archive upgrade`` (an
            embedded SQLite archive is upgraded here), or is newer than this version.
    """
    archive = DeadLetterArchive(settings.archive_url, redact_keys=settings.redact_keys)
    try:
        archive.check()
    except ArchiveUnavailable as exc:
        # The API serves without it, and /readyz says so; its schema is checked when it is back.
        logger.warning("%s", exc)
    except ArchiveVersionError:
        archive.close()
        raise
    if not settings.api_token:
        logger.warning("No API token is set (PROVIDER_JOBS_API_TOKEN): mutating endpoints answer 403")
    sock = _bind(settings.api_host, settings.api_port)
    logger.info("DLQ console: http://%s:%d/ui/", settings.api_host, settings.api_port)
    try:
        server = uvicorn.Server(uvicorn.Config(create_app(settings, archive=archive), log_config=None))
        server.run(sockets=[sock])
    finally:
        sock.close()


def api_command(
    host: Annotated[str | None, typer.Option(help="Bind address (PROVIDER_JOBS_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (PROVIDER_JOBS_API_PORT).")] = None,
) -> None:
    """Serve the HTTP API: /queue-stats, /metrics, /healthz, /readyz and the DLQ endpoints.

    Exit codes: 2 a setting or option is not allowed; 5 the address cannot be bound; 6 the
    archive needs `provider-jobs archive upgrade`, or is newer than this version.
    """
    overrides: dict[str, Any] = {"api_host": host, "api_port": port}
    try:
        settings = Settings.from_env(
            **{name: value for name, value in overrides.items() if value is not None}
        )
        configure_logging(
            log_format=settings.log_format, level=settings.log_level, redact_keys=settings.redact_keys
        )
        # Replays sent through the API get their send spans (OTEL_*; off when none is set).
        configure_tracing(service_name="provider-jobs-api")
        serve(settings)
    except _AddressUnavailable as exc:
        typer.echo(f"provider-jobs api: {exc}", err=True)
        raise typer.Exit(EXIT_ADDRESS_IN_USE) from None
    except ConfigurationError as exc:
        typer.echo(f"provider-jobs api: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    except ArchiveVersionError as exc:
        typer.echo(f"provider-jobs api: {exc}", err=True)
        raise typer.Exit(EXIT_ARCHIVE_VERSION) from None
