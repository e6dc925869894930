"""The body timeout on its own: what it cuts off, and what it leaves alone."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.types import Message, Receive, Scope, Send

from serving.middleware import BodyTimeout, BodyTimeoutMiddleware

TIMEOUT = 0.2
SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}


def client(*messages: Message, then_wait: float) -> Receive:
    """A client that sends `messages` at once, then nothing for `then_wait` seconds."""
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(then_wait)
        return {"type": "http.disconnect"}

    return receive


async def read_all(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the body to the end, then waits for the client to leave."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    await receive()


async def discard(message: Message) -> None:
    return None


def test_a_body_that_stops_arriving_is_cut_off_after_the_timeout() -> None:
    middleware = BodyTimeoutMiddleware(read_all, seconds=TIMEOUT)
    five_bytes = {"type": "http.request", "body": b'{"loa', "more_body": True}
    started = time.monotonic()

    with pytest.raises(BodyTimeout):
        asyncio.run(middleware(SCOPE, client(five_bytes, then_wait=60), discard))

    assert TIMEOUT <= time.monotonic() - started < 1.25 * TIMEOUT + 0.5


def test_waits_after_a_complete_body_are_not_cut_off() -> None:
    middleware = BodyTimeoutMiddleware(read_all, seconds=TIMEOUT)
    whole = {"type": "http.request", "body": b"{}", "more_body": False}

    asyncio.run(middleware(SCOPE, client(whole, then_wait=3 * TIMEOUT), discard))


def test_a_body_in_steady_parts_is_not_cut_off() -> None:
    async def parts() -> None:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        middleware = BodyTimeoutMiddleware(read_all, seconds=TIMEOUT)
        app = asyncio.create_task(middleware(SCOPE, queue.get, discard))
        for _ in range(6):  # 6 x TIMEOUT / 2: longer than the timeout in all
            await queue.put({"type": "http.request", "body": b"x", "more_body": True})
            await asyncio.sleep(TIMEOUT / 2)
        await queue.put({"type": "http.request", "body": b"", "more_body": False})
        await queue.put({"type": "http.disconnect"})
        await asyncio.wait_for(app, timeout=5)

    asyncio.run(parts())
