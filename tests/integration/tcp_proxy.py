"""A loopback TCP proxy that a test can pause: a database that stops answering, without stopping it.

While paused, the proxy moves no bytes in either direction and connects no new client to the
upstream, so every client sees a server that has gone silent (as behind a failed network path);
on resume the bytes held in the sockets flow again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

_POLL_S = 0.1
_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to ``upstream``; `pause` and `resume` it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._running = threading.Event()  # set while bytes may flow
        self._running.set()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def pause(self) -> None:
        """Stop moving bytes and connecting clients until `resume`."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def start(self) -> None:
        self._spawn(self._accept)

    def stop(self) -> None:
        self._stopped.set()
        self._running.set()
        for thread in self._threads:
            thread.join(5)
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._sockets.append(client)
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        self._wait_running()
        if self._stopped.is_set():
            return
        upstream = socket.create_connection(self._upstream, timeout=5)
        self._sockets.append(upstream)
        pairs = {client: upstream, upstream: client}
        while not self._stopped.is_set():
            self._wait_running()
            readable, _, _ = select.select(list(pairs), [], [], _POLL_S)
            for source in readable:
                try:
                    data = source.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:  # one side closed: close both
                    for sock in pairs:
                        with contextlib.suppress(OSError):
                            sock.close()
                    return
                pairs[source].sendall(data)

    def _wait_running(self) -> None:
        while not self._running.wait(_POLL_S) and not self._stopped.is_set():
            pass


@contextlib.contextmanager
def tcp_proxy(host: str, port: int) -> Iterator[TcpProxy]:
    """A started `TcpProxy` to ``host:port``, stopped on exit."""
    proxy = TcpProxy((host, port))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
