"""ASGI middleware that must run before a route reads its body: its size and its pace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """The request body is longer than the server accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes (LOANOPS_MAX_BODY_BYTES)")
        self.limit = limit


class BodyTimeout(Exception):
    """The client stopped sending its request body before the end."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body stopped arriving: nothing for {seconds:g} s "
            "(LOANOPS_BODY_TIMEOUT_SECONDS)"
        )
        self.seconds = seconds


class BodyTimeoutMiddleware:
    """Gives up on a request body when `seconds` pass with no part of it arriving.

    uvicorn waits for a body forever, so a client that sends its headers and a few bytes holds a
    connection and a request slot until it leaves. The clock runs only while the route waits for
    the body (a slow route is not the client's fault) and stops once the body is complete, so
    waits that follow it, such as a download listening for the client to disconnect, are not
    cut off. Uploads are timed too: a steady stream never waits long for its next part.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.seconds) from None
            body_complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, timed_receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413, by declared length or as they stream in.

    Routes for which `exempt(scope)` is true enforce limits of their own (file uploads).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: Callable[[Scope], bool]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await _reply(send, 400, b'{"detail":"Content-Length is not a number"}')
                    return
                if int(value) > self.max_bytes:
                    detail = str(BodyTooLarge(self.max_bytes)).encode()
                    await _reply(send, 413, b'{"detail":"' + detail + b'"}')
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)  # a chunked body that lied by omission
            return message

        await self.app(scope, counting_receive, send)


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
