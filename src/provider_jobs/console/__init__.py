"""The DLQ console: the archive, its groups and records, and the audit log, in a browser at ``/ui/``.

Rendered on the server (Jinja2) by the API's process, with one small script
(the overview's refresh) and one stylesheet shipped in the package. Every
action calls what the API's endpoints call; every text is masked by the
settings' redactor and escaped.
"""

from __future__ import annotations

from inspect import iscoroutinefunction
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ..dlq import DeadLetterArchive
from ..errors import ArchiveUnavailable, BrokerUnavailable, ProviderJobsError, RecordNotFound
from ..redaction import Redactor
from ..settings import Settings
from .actions import action_router as _action_router
from .context import ConsoleContext
from .context import LoginRequired as _LoginRequired
from .context import Refused as _Refused
from .context import login_url as _login_url
from .operations import operations_router as _operations_router
from .pages import page_router as _page_router
from .render import SECURITY_HEADERS as _SECURITY_HEADERS

__all__ = ["ConsoleContext", "install_console"]


def _status_of(exc: Exception) -> int:
    """The HTTP status a console page answers one of our errors with."""
    if isinstance(exc, RecordNotFound):
        return 404
    if isinstance(exc, ArchiveUnavailable | BrokerUnavailable):
        return 503
    return 500


#: The package's stylesheet and script.
_STATIC = Path(__file__).parent / "static"


def install_console(app: FastAPI, settings: Settings, archive: DeadLetterArchive, redactor: Redactor) -> None:
    """Serve the console on ``app`` under ``/ui/``.

    Args:
        app: The API application.
        settings: Broker URL, queue, tokens and the reverse proxy's user header.
        archive: The archive the API serves.
        redactor: How every view is masked.
    """
    console = ConsoleContext(settings, archive, redactor)

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _LoginRequired)
        return RedirectResponse(_login_url(exc.next_url), status_code=303, headers=_SECURITY_HEADERS)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Refused)
        return console.pages.render(
            request, "refused.html", None, status_code=exc.status_code, reason=exc.reason
        )

    def page_or(previous: Any) -> Any:
        async def handler(request: Request, exc: Exception) -> Response:
            # The API's errors answer JSON; on a console page the same error is a page.
            if request.url.path.startswith("/ui/"):
                reason = redactor.text(str(exc))
                return console.pages.render(
                    request, "refused.html", None, status_code=_status_of(exc), reason=reason
                )
            result: Response = (
                await previous(request, exc) if iscoroutinefunction(previous) else previous(request, exc)
            )
            return result

        return handler

    for kind, previous in list(app.exception_handlers.items()):
        if isinstance(kind, type) and issubclass(kind, ProviderJobsError):
            app.add_exception_handler(kind, page_or(previous))
    app.add_exception_handler(_LoginRequired, login_required)
    app.add_exception_handler(_Refused, refused)
    app.include_router(_page_router(console))
    app.include_router(_action_router(console))
    app.include_router(_operations_router(console))
    app.mount("/ui/static", StaticFiles(directory=_STATIC), name="console-static")

    @app.get("/ui", include_in_schema=False)
    def console_root() -> Response:
        return RedirectResponse("/ui/", status_code=308)
