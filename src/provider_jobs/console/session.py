"""Console sessions: the API token exchanged at login for a signed, expiring, HttpOnly cookie.

With ``PROVIDER_JOBS_API_TOKEN`` (or the read-only token) set, every console
page needs a session. ``/ui/login`` takes the token and the operator's name
(the name written to the audit log; a reverse proxy's header when
``PROVIDER_JOBS_CONSOLE_USER_HEADER`` is set) and answers with a cookie signed
with a key derived from the tokens: changing a token ends every session.
Each session carries its own CSRF token, which every form posts back. With no
token configured the console is open and read-only, as the API's reads are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..settings import Settings

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "SESSION_MAX_AGE_S",
    "Operator",
    "SessionKeeper",
    "valid_name",
]

#: The session cookie's name.
COOKIE = "pj_console"
#: The cookie holding the login form's own CSRF token (there is no session yet).
LOGIN_COOKIE = "pj_login"
#: How long a session lasts after login, in seconds: one on-call shift.
SESSION_MAX_AGE_S = 8 * 3600
#: Longest operator name accepted.
_MAX_NAME = 100


def valid_name(name: str) -> bool:
    """Whether ``name`` may stand in the audit log: 1 to 100 printable characters."""
    return 0 < len(name) <= _MAX_NAME and name.isprintable() and name.strip() == name


@dataclasses.dataclass(frozen=True, kw_only=True)
class Operator:
    """Who is looking at the console, and what they may do.

    Args:
        who: The name written to the audit log; ``None`` when nobody logged in.
        can_write: Whether replays and discards are allowed.
        csrf: The token every form of this session posts back.
        read_only_reason: Why mutations are refused, shown on every page.
        logged_in: Whether a session cookie carries this operator (logout is offered).
        session_id: The session's id, by which logging out ends it.
    """

    who: str | None
    can_write: bool
    csrf: str = ""
    read_only_reason: str | None = None
    logged_in: bool = False
    session_id: str = ""


class SessionKeeper:
    """Signs and reads session cookies for one configuration of tokens.

    Args:
        settings: The API tokens and the reverse proxy's user header.
        max_age_s: How long a session lasts. Default :data:`SESSION_MAX_AGE_S`.
    """

    def __init__(self, settings: Settings, *, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self.token = settings.api_token or None
        self.read_token = settings.api_read_token or None
        self.user_header = settings.console_user_header
        self.max_age_s = max_age_s
        key = hashlib.sha256(f"{self.token or ''}\0{self.read_token or ''}".encode()).hexdigest()
        self._serializer = URLSafeTimedSerializer(key, salt="provider-jobs-console-session")
        # Sessions logged out before they expire; a restart forgets them, their cookies still expire.
        self._ended: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Whether pages need a login: a token is configured."""
        return self.token is not None or self.read_token is not None

    def open_operator(self) -> Operator:
        """The operator of a console without tokens: read-only, and the reason why."""
        return Operator(
            who=None,
            can_write=False,
            read_only_reason="No API token is configured (set PROVIDER_JOBS_API_TOKEN): "
            "the console is read-only, as the API's mutations are refused.",
        )

    def check_token(self, given: str) -> bool | None:
        """``True`` for the mutation token, ``False`` for the read-only one, ``None`` for neither."""
        write = bool(self.token) and hmac.compare_digest(given.encode(), (self.token or "").encode())
        read = bool(self.read_token) and hmac.compare_digest(given.encode(), (self.read_token or "").encode())
        if write:
            return True
        return False if read else None

    def proxy_name(self, headers: Any) -> str | None:
        """The user name the reverse proxy sent, when one is configured and valid."""
        if self.user_header is None:
            return None
        name = str(headers.get(self.user_header, "")).strip()
        return name if valid_name(name) else None

    def issue(self, *, who: str, can_write: bool) -> str:
        """A new session's cookie value."""
        payload = {
            "who": who,
            "w": can_write,
            "csrf": secrets.token_urlsafe(24),
            "sid": secrets.token_hex(16),
        }
        return self._serializer.dumps(payload)

    def read(self, cookie: str | None, headers: Any) -> Operator | None:
        """The operator of a session cookie; ``None`` when it is missing, forged, expired or ended."""
        if not cookie:
            return None
        try:
            payload = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(payload, dict) or payload.get("sid") in self._ended:
            return None
        can_write = bool(payload.get("w")) and self.token is not None
        return Operator(
            who=self.proxy_name(headers) or str(payload.get("who")),
            can_write=can_write,
            csrf=str(payload.get("csrf", "")),
            read_only_reason=None
            if can_write
            else "You logged in with the read-only token (PROVIDER_JOBS_API_READ_TOKEN): "
            "replays and discards need PROVIDER_JOBS_API_TOKEN.",
            logged_in=True,
            session_id=str(payload.get("sid", "")),
        )

    def end(self, operator: Operator) -> None:
        """Log a session out: its cookie is refused from now on, even if replayed."""
        now = time.time()
        with self._lock:
            self._ended = {sid: at for sid, at in self._ended.items() if now - at < self.max_age_s}
            self._ended[operator.session_id] = now
