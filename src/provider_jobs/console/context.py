"""ConsoleContext: what every console route shares (settings, archive, redaction, sessions,
templates, running replays), and who is asking."""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request

from ..dlq import DeadLetterArchive, Operations
from ..redaction import Redactor
from ..settings import Settings
from .render import Pages
from .runs import ReplayRuns
from .session import COOKIE, Operator, SessionKeeper

__all__ = ["CSRF_REFUSED", "ConsoleContext", "Form", "LoginRequired", "Refused", "login_url", "read_form"]

#: Why a form without its session's CSRF token is refused.
CSRF_REFUSED = "The form's CSRF token is missing or wrong: reload the page and try again."
#: Form fields read at most from one post; the console's forms have a handful.
_MAX_FIELDS = 20


class LoginRequired(Exception):
    """The page needs a login; the handler redirects to it, then back to ``next_url``."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class Refused(Exception):
    """A request the console refuses, with the HTTP status and the reason shown on the page."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


async def read_form(request: Request) -> dict[str, str]:
    """A posted form's fields (``application/x-www-form-urlencoded``), the last of each name.

    Raises:
        Refused: The body is not such a form, or holds more than a few fields.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refused(415, "Expected a form post (application/x-www-form-urlencoded)")
    try:
        fields = parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "The form could not be read") from None
    return dict(fields)


class ConsoleContext:
    """The console's shared parts.

    Args:
        settings: Broker URL, queue, tokens, operator header.
        archive: The dead-letter archive the API serves.
        redactor: How every view is masked and capped.
    """

    def __init__(self, settings: Settings, archive: DeadLetterArchive, redactor: Redactor) -> None:
        self.settings = settings
        self.archive = archive
        self.redactor = redactor
        self.sessions = SessionKeeper(settings)
        self.pages = Pages()
        self.runs = ReplayRuns(describe_error=lambda exc: redactor.text(str(exc)))
        self.operations = Operations(archive, broker_url=settings.broker_url)

    def operator(self, request: Request) -> Operator:
        """Who is asking.

        Raises:
            LoginRequired: Tokens are configured and the request has no valid session.
        """
        if not self.sessions.required:
            return self.sessions.open_operator()
        operator = self.sessions.read(request.cookies.get(COOKIE), request.headers)
        if operator is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target if request.method == "GET" else "/ui/")
        return operator

    def writer(self, request: Request, form: dict[str, str]) -> tuple[Operator, str]:
        """The operator of a mutation, and their audit name, once its form's CSRF token matched.

        Raises:
            LoginRequired: No valid session.
            Refused: 403 for a missing or wrong CSRF token, or an operator who may not write.
        """
        operator = self.operator(request)
        if operator.logged_in:
            given = form.get("csrf", "")
            if not given or not hmac.compare_digest(given.encode(), operator.csrf.encode()):
                raise Refused(
                    403, "The form's CSRF token is missing or wrong: reload the page and try again."
                )
        if not operator.can_write or operator.who is None:
            raise Refused(403, operator.read_only_reason or "This session may not change records.")
        return operator, operator.who


#: A posted form, as a dependency: read before the (synchronous) route runs in its thread.
Form = Annotated[dict[str, str], Depends(read_form)]


def login_url(next_url: str) -> str:
    """The login page, coming back to ``next_url`` after."""
    return "/ui/login?next=" + quote(next_url, safe="/")
