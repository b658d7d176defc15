"""What every request passes through: a bound on its body, and a clean answer when a service the
API depends on is down."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 for a request body over ``max_bytes``: at once when its Content-Length says so,
    and as soon as that much has arrived otherwise (a chunked body), so it is never buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = f'{{"detail": "request body larger than {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After, in the shape of the API surface that was called."""
    assert isinstance(exc, DBAPIError)
    if not exc.connection_invalidated and not isinstance(exc, OperationalError):
        raise exc  # a bug, not an outage: the usual 500
    log.warning("database unavailable: %s", exc.orig)
    message = "the database is unavailable; try again shortly"
    body: dict[str, Any]
    if request.url.path.startswith(("/v1/images", "/v1/models")):
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    elif request.url.path.startswith("/sdapi/"):
        body = {"error": "ServiceUnavailable", "detail": message, "body": "", "errors": message}
    else:
        body = {"detail": message}
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
