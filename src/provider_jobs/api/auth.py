"""Bearer tokens: the mutation token (``PROVIDER_JOBS_API_TOKEN``) and the read-only one.

With ``PROVIDER_JOBS_API_TOKEN`` set, the ``/dlq`` read endpoints need a token
too: that one, or ``PROVIDER_JOBS_API_READ_TOKEN``. Mutations and reveals need
the mutation token; with none configured they are refused (403), never open.
``/healthz``, ``/readyz``, ``/metrics`` and ``/queue-stats`` stay open.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = [
    "READ_TOKEN_VARIABLE",
    "TOKEN_VARIABLE",
    "TokenCheck",
    "bearer_token_guard",
    "check_token",
    "read_token_guard",
]

#: Where operators set the token; named in the 403 so that the fix is obvious.
TOKEN_VARIABLE = "PROVIDER_JOBS_API_TOKEN"  # noqa: S105 - a variable name, not a secret
#: Where operators set a read-only token.
READ_TOKEN_VARIABLE = "PROVIDER_JOBS_API_READ_TOKEN"  # noqa: S105 - a variable name, not a secret

_bearer = HTTPBearer(auto_error=False, description=f"The token set in {TOKEN_VARIABLE}.")


@dataclasses.dataclass(frozen=True)
class TokenCheck:
    """Why a request was refused: the HTTP status, the detail and its headers."""

    status_code: int
    detail: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def exception(self) -> HTTPException:
        """As FastAPI's exception."""
        return HTTPException(self.status_code, detail=self.detail, headers=self.headers or None)


def check_token(
    authorization: str | None,
    *,
    accepted: Sequence[str | None],
    open_when_unset: bool = False,
    read_only: str | None = None,
) -> TokenCheck | None:
    """Check an ``Authorization`` header against the configured tokens; ``None`` lets it through.

    Args:
        authorization: The header's value, if any.
        accepted: The tokens that let the request through; unset ones are ignored.
        open_when_unset: With none of ``accepted`` configured, let every request
            through (reads) instead of refusing it with 403 (mutations).
        read_only: A configured token that is refused with 403 (read-only, on a mutation).
    """
    tokens = [token for token in accepted if token]
    if not tokens:
        if open_when_unset:
            return None
        return TokenCheck(
            status.HTTP_403_FORBIDDEN,
            f"Mutations are disabled: no API token is configured (set {TOKEN_VARIABLE})",
        )
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return TokenCheck(
            status.HTTP_401_UNAUTHORIZED,
            "A bearer token is required: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    # Every token is compared, so that the time taken says nothing of which one matched.
    matched = [hmac.compare_digest(given.encode(), token.encode()) for token in tokens]
    if any(matched):
        return None
    if read_only and hmac.compare_digest(given.encode(), read_only.encode()):
        return TokenCheck(
            status.HTTP_403_FORBIDDEN,
            f"This token is read-only ({READ_TOKEN_VARIABLE}); this needs {TOKEN_VARIABLE}",
        )
    return TokenCheck(
        status.HTTP_401_UNAUTHORIZED,
        "The bearer token is not valid",
        {"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _header(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else f"{credentials.scheme} {credentials.credentials}"


def bearer_token_guard(
    token: str | None, *, read_token: str | None = None
) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency that lets a request through only with ``Authorization: Bearer <token>``.

    Args:
        token: The configured token. ``None`` or empty refuses every request
            with 403: mutations are never open.
        read_token: The read-only token, refused here with 403. Default none.

    Raises:
        HTTPException: (from the dependency) 403 when no token is configured or
            the read-only one is sent, 401 when the request carries no token or a wrong one.
    """

    def guard(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        refused = check_token(_header(credentials), accepted=[token], read_only=read_token)
        if refused is not None:
            raise refused.exception()

    return guard


def read_token_guard(
    token: str | None, read_token: str | None
) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency for the read endpoints: open when no token is configured,
    else the mutation token or the read-only one.

    Raises:
        HTTPException: (from the dependency) 401 when a token is configured and the
            request carries none of them.
    """

    def guard(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        refused = check_token(_header(credentials), accepted=[token, read_token], open_when_unset=True)
        if refused is not None:
            raise refused.exception()

    return guard
