"""RequestGate: the token is checked, and the body's size capped, before any body is read.

FastAPI reads a whole request body before its dependencies run, the token
check among them: a 300 MB body without a token would be read (and parsed)
first. This ASGI middleware runs before FastAPI does. A mutation's token is
checked on its headers alone; then a body whose ``Content-Length`` is over
the cap is refused with 413 unread, and a streamed one is read only up to the
cap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import status
from fastapi.responses import JSONResponse

from .auth import TokenCheck

__all__ = ["RequestGate"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

#: Methods that never change anything; only the others carry a body we read.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestGate:
    """ASGI middleware: refuse a request on its headers before reading its body.

    Args:
        app: The ASGI application behind the gate.
        max_body_bytes: Largest body let through; a larger one is answered 413.
        authorize: Given a mutation's ``Authorization`` header and path, why it is
            refused, or ``None`` to let it through.
    """

    def __init__(
        self,
        app: _App,
        *,
        max_body_bytes: int,
        authorize: Callable[[str | None, str], TokenCheck | None],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.authorize = authorize

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if scope["method"] not in _SAFE_METHODS:
            refused = self.authorize(headers.get("authorization"), scope["path"])
            if refused is not None:
                await self._answer(
                    scope,
                    receive,
                    send,
                    status_code=refused.status_code,
                    detail=refused.detail,
                    headers=refused.headers,
                )
                return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit() or len(declared.strip()) > 18:
                await self._answer(
                    scope, receive, send, status_code=400, detail="Content-Length is not a number of bytes"
                )
                return
            if int(declared) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        if scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: the application sees the disconnect itself.
                await self.app(scope, _replay(bytes(body), message, receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), None, receive), send)

    async def _too_large(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        await self._answer(
            scope,
            receive,
            send,
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"The request body is larger than {self.max_body_bytes} bytes "
            "(PROVIDER_JOBS_API_MAX_BODY_BYTES)",
        )

    @staticmethod
    async def _answer(
        scope: _Scope,
        receive: _Receive,
        send: _Send,
        *,
        status_code: int,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = JSONResponse({"detail": detail}, status_code=status_code, headers=headers)
        await response(scope, receive, send)


def _replay(body: bytes, pending: _Message | None, receive: _Receive) -> _Receive:
    """A ``receive`` that hands over ``body`` (then ``pending``) before reading on."""
    queue: list[_Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if pending is not None:
        queue.append(pending)

    async def replayed() -> _Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed
