"""Rendering console pages: the Jinja environment, its filters, and the headers every page carries."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from .session import Operator

__all__ = ["SECURITY_HEADERS", "Pages", "format_age", "format_ms"]

#: Sent with every console page: scripts and styles from the console's own files only, never inline.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def format_ms(ms: object) -> str:
    """A time in ms since the epoch as ``YYYY-MM-DD HH:MM:SS`` UTC; ``-`` for none."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def format_age(ms: object, *, now_s: float | None = None) -> str:
    """How long ago ``ms`` was, as ``3d 4h``, ``2h 5m``, ``4m 10s`` or ``12s``."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    seconds = max(int((now_s if now_s is not None else time.time()) - ms / 1000), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


class Pages:
    """The console's templates, rendered with autoescaping: stored text is always shown as text."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("provider_jobs.console", "templates"),
            autoescape=True,
            # A stored record may lack any field (a hand-made message): missing ones show as empty.
            undefined=jinja2.Undefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["utc"] = format_ms
        self.env.filters["age"] = format_age
        self.env.filters["pretty_json"] = _pretty_json

    def render(
        self,
        request: Request,
        template: str,
        operator: Operator | None,
        *,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """``template`` as an HTML response with :data:`SECURITY_HEADERS`."""
        html = self.env.get_template(template).render(
            request=request, operator=operator, path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
