"""The HTTP front of both servers (the REST API on HTTP_PORT, the metrics on METRICS_PORT): Tornado on an event
loop of its own worker thread (workers.py), hardened against slow and greedy clients.

Why Tornado and not waitress: waitress's public API has no deadline for a request head (its `channel_timeout`
is an inactivity timeout that every trickled byte renews: 1,000 slowloris connections locked /health out for
45 s), no cap per client address, and it reads and spools every body before the app sees the request. Tornado
gives each of these through public, documented parts: `idle_connection_timeout` is a deadline for the whole
request head (and for an idle keep-alive connection), `body_timeout` one for the whole body, `handle_stream` /
`on_close` see every connection, and `stream_request_body` handlers see the headers before any byte of the body
is read, so /predict takes its concurrency slot first and buffers only what it has a slot for.

`ConnectionLimits` (from the settings):
- `header_timeout`: a request head (or a keep-alive connection's next one) not complete in time closes the
  connection (HTTP_HEADER_TIMEOUT_SECONDS);
- `body_timeout`: a body not complete in time closes the connection (HTTP_BODY_TIMEOUT_SECONDS);
- `per_client`: open connections per client address, beyond which a new one is closed at once
  (HTTP_MAX_CONNECTIONS_PER_CLIENT); `total`: open connections in all;
- `max_header_bytes`: a request head larger than this closes the connection.
The event loop never blocks: slow work (a prediction, a scrape) runs on a bounded thread pool of the caller's.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets
from tornado.web import Application

from edge_inference.errors import PortInUseError
from edge_inference.settings import Settings
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

# Bodies are limited by each handler itself (it answers 413 in JSON); this only stops Tornado refusing first.
_UNLIMITED_BODY = 1 << 40


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    per_client: int = 32
    total: int = 1000
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            per_client=settings.http_max_connections_per_client,
        )


class _GuardedHTTPServer(HTTPServer):
    """Tornado's HTTP server, counting open connections per client address and closing new ones over the caps."""

    def initialize(  # type: ignore[override]
        self, *args: Any, limits: ConnectionLimits, name: str, **kwargs: Any
    ) -> None:
        super().initialize(*args, **kwargs)
        self.limits = limits
        self.server_name = name
        self._open: Counter[str] = Counter()
        self._address_of: dict[IOStream, str] = {}
        self._warned: set[str] = set()
        self.refused = 0

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        client = str(address[0]) if isinstance(address, tuple) and address else "local"
        if self._open[client] >= self.limits.per_client or len(self._address_of) >= self.limits.total:
            self.refused += 1
            if client not in self._warned:  # once per address until it is back under the cap: no log flood
                self._warned.add(client)
                log.warning(
                    "%s: %s holds %d connections (cap %d per client, %d in all): new ones closed at once",
                    self.server_name,
                    client,
                    self._open[client],
                    self.limits.per_client,
                    len(self._address_of),
                )
            stream.close()
            return
        self._open[client] += 1
        self._address_of[stream] = client
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        client = self._address_of.pop(getattr(server_conn, "stream", None), None)  # type: ignore[arg-type]
        if client is not None:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]
                self._warned.discard(client)


class HardenedHttpServer(Worker):
    """A Tornado `Application` served on its own worker thread (`name`) with `ConnectionLimits`; `port` 0 binds
    any free port.

    The sockets are bound in the constructor (a port in use fails there, not in the thread, with a
    `PortInUseError` naming `setting`, the variable that chose the port). `stop(timeout)`
    stops accepting, lets requests in flight (`busy()`) finish within `timeout`, then closes every connection.
    An event loop that ends while nobody asked it to is a dead worker: the supervisor hears of it.
    """

    def __init__(
        self,
        app: Application,
        host: str,
        port: int,
        limits: ConnectionLimits,
        *,
        name: str = "http",
        setting: str = "HTTP_PORT",
        busy: Callable[[], bool] = lambda: False,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__(name, supervisor, daemon=True)
        self.app = app
        self.limits = limits
        self._busy = busy
        try:
            self._sockets: list[socket.socket] = bind_sockets(port, address=host or None, family=socket.AF_UNSPEC)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(setting, host, port) from None
            raise
        self._started = threading.Event()
        self._ioloop: IOLoop | None = None
        self._server: _GuardedHTTPServer | None = None
        self._stopped = False
        self._setup_error: BaseException | None = None

    @property
    def port(self) -> int:
        return int(self._sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return str(self._sockets[0].getsockname()[0])

    @property
    def refused_connections(self) -> int:
        return self._server.refused if self._server is not None else 0

    def start(self) -> None:
        if self.started or self._stopped:
            raise RuntimeError(f"{self.name} server can be started once")
        super().start()
        self._started.wait(10)
        if self._setup_error is not None:
            raise RuntimeError(f"{self.name} server failed to start: {self._setup_error}")

    def setup(self) -> bool:
        try:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._ioloop = IOLoop.current()
            self._server = _GuardedHTTPServer(
                self.app,
                idle_connection_timeout=self.limits.header_timeout,
                body_timeout=self.limits.body_timeout,
                max_header_size=self.limits.max_header_bytes,
                max_body_size=_UNLIMITED_BODY,
                limits=self.limits,
                name=self.name,
            )
            self._server.add_sockets(self._sockets)
        except BaseException as exc:  # start() raises it on the caller's thread
            self._setup_error = exc
            self._started.set()
            return False
        self._started.set()
        return True

    def run(self) -> None:
        assert self._ioloop is not None
        self._ioloop.start()

    def teardown(self) -> None:
        if self._ioloop is not None:
            self._ioloop.close(all_fds=False)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop within about `timeout` seconds; requests still running then are cut off. True once stopped."""
        if self._stopped:
            return not self.is_alive()
        self._stopped = True
        self.request_stop()  # the loop's end from here on is asked for, not a death
        ioloop, server = self._ioloop, self._server
        if ioloop is None or server is None or not self.is_alive():
            for sock in self._sockets:
                sock.close()
            return True
        deadline = time.monotonic() + timeout
        ioloop.add_callback(server.stop)  # stop accepting; connections stay open
        while self._busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._busy():
            log.warning("%s: requests still running after %.1f s; closing their connections", self.name, timeout)

        async def close_all() -> None:
            try:
                await asyncio.wait_for(server.close_all_connections(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("%s: connections did not close in time", self.name)
            ioloop.stop()

        ioloop.add_callback(close_all)
        if not self.join(max(1.0, deadline - time.monotonic() + 1.0)):
            log.warning("%s server thread did not stop", self.name)
            return False
        return True

    def __enter__(self) -> HardenedHttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
