"""Bearer-token check for the API's mutating endpoints."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["TOKEN_VARIABLE", "bearer_token_guard"]

#: Where operators set the token; named in the 403 so that the fix is obvious.
TOKEN_VARIABLE = "PROVIDER_JOBS_API_TOKEN"  # noqa: S105 - a variable name, not a secret

_bearer = HTTPBearer(auto_error=False, description=f"The token set in {TOKEN_VARIABLE}.")


def bearer_token_guard(token: str | None) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency that lets a request through only with ``Authorization: Bearer <token>``.

    Args:
        token: The configured token. ``None`` or empty refuses every request
            with 403: mutations are never open.

    Raises:
        HTTPException: (from the dependency) 403 when no token is configured,
            401 when the request carries no token or a wrong one.
    """

    def guard(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if not token:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"Mutations are disabled: no API token is configured (set {TOKEN_VARIABLE})",
            )
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="A bearer token is required: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="The bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return guard
