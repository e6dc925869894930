"""ASGI middleware that must run before a route reads its body: its size and its pace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

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

    One watchdog task checks every waiting request a few times per timeout, rather than a timer
    per read: `asyncio.timeout` around each read cost some 15 us per request, as much as the
    rest of our middleware together. A request is cut off between `seconds` and 1.25 x `seconds`.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self._waiting: dict[asyncio.Task[Any], float] = {}  # task -> when its wait ends
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            task = asyncio.current_task()
            assert task is not None
            self._waiting[task] = time.monotonic() + self.seconds
            if self._watchdog is None:
                self._watchdog = asyncio.create_task(self._watch(), name="body-timeout")
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task not in self._expired:
                    raise
                self._expired.discard(task)
                task.uncancel()
                raise BodyTimeout(self.seconds) from None
            finally:
                self._waiting.pop(task, None)
            body_complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, timed_receive, send)

    async def _watch(self) -> None:
        """Cancel the reads that waited too long; ends when none waits, to restart with one."""
        try:
            while self._waiting:
                await asyncio.sleep(self.seconds / 4)
                now = time.monotonic()
                for task, deadline in list(self._waiting.items()):
                    if now >= deadline:
                        del self._waiting[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._watchdog = None


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
