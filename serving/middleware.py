"""ASGI middleware that must run before a route reads its body."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """The request body is longer than the server accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes (LOANOPS_MAX_BODY_BYTES)")
        self.limit = limit


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
