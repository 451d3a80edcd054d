"""The REST API's server: a WSGI app served by waitress on a worker thread (`http-api`).

Waitress reads each request whole before the app sees it, so the body limit the app asks for (`ServerNeeds`)
is enforced while reading; waitress's own refusals (body over the limit, malformed HTTP) get the API's JSON
error body (`_JsonErrorTask`). Idle connections are closed after IDLE_CONNECTION_SECONDS so that quiet
keep-alive clients cannot hold the connection limit. `stop()` drains requests in flight within its timeout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.wasyncore import close_all, dispatcher, loop

from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

# A connection idle this long (a keep-alive client gone quiet, or one that announced a body and stopped
# sending) is closed; idle connections are looked for every IDLE_SWEEP_SECONDS (waitress channel_timeout and
# cleanup_interval; its defaults, 120 s and 30 s, let idle keep-alive clients hold the connection limit for
# minutes, during which no new client is accepted).
IDLE_CONNECTION_SECONDS = 30
IDLE_SWEEP_SECONDS = 5
# Open connections (idle keep-alive ones included) before waitress stops accepting (its default is 100).
CONNECTION_LIMIT = 1000

# Waitress's own refusals (raised while parsing, before the app runs) and their error codes.
_SERVER_ERROR_CODES = {400: "bad_request", 413: "body_too_large", 431: "headers_too_large", 501: "not_implemented"}


@dataclass(frozen=True)
class ServerNeeds:
    """What the app asks of the server that runs it; `create_http_app` stores it in
    `app.extensions[SERVER_NEEDS]` and `HttpServer` applies it, so the app is served right however built."""

    max_body_bytes: int
    min_threads: int
    on_refused: Callable[[str, int], None]


SERVER_NEEDS = "edge_inference.control.http_server"


class _JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """Waitress's answer to a request it refuses while parsing (body over the limit, malformed HTTP), as the
    API's JSON error. `on_refused(path, status)` counts and logs it."""

    on_refused: Callable[[str, int], None] | None = None

    def execute(self) -> None:
        err = self.request.error
        status = int(err.code)
        code = _SERVER_ERROR_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        message = f"{err.reason}: {err.body}" if err.body else str(err.reason)
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.status = f"{status} {err.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        if self.on_refused is not None:  # counted before the client can see the answer
            try:
                self.on_refused(str(getattr(self.request, "path", "") or ""), status)
            except Exception:
                log.exception("on_refused hook failed")
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class HttpServer(Worker):
    """A WSGI app served by waitress on a worker thread (`http-api`); `port` is the bound port (pass 0 for any).

    The socket is bound in the constructor (a port in use fails there, not in the thread). `stop()` closes
    the listening socket, lets requests in flight finish within `timeout`, then closes every connection.
    For the REST API app (`create_http_app`) its `ServerNeeds` apply: at least HTTP_MAX_CONCURRENCY + 4
    threads (so a request over the limit reaches the app and gets its 503, and /health never queues), the
    body limit enforced by waitress while reading, and refusals counted; explicit arguments override them.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        threads: int,
        *,
        max_body_bytes: int | None = None,
        on_refused: Callable[[str, int], None] | None = None,
        idle_connection_seconds: float = IDLE_CONNECTION_SECONDS,
        connection_limit: int = CONNECTION_LIMIT,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("http-api", supervisor, daemon=True)
        needs = getattr(app, "extensions", {}).get(SERVER_NEEDS)
        if isinstance(needs, ServerNeeds):  # the REST API app: its limits apply unless given here
            threads = max(threads, needs.min_threads)
            max_body_bytes = needs.max_body_bytes if max_body_bytes is None else max_body_bytes
            on_refused = needs.on_refused if on_refused is None else on_refused
        adjustments: dict[str, Any] = {
            "host": host,
            "port": port,
            "threads": threads,
            "ident": "edge-inference",
            "asyncore_use_poll": True,
            "channel_timeout": idle_connection_seconds,
            "cleanup_interval": min(IDLE_SWEEP_SECONDS, idle_connection_seconds),
            "connection_limit": connection_limit,
        }
        if max_body_bytes is not None:
            adjustments["max_request_body_size"] = max_body_bytes
        self._map: dict[int, Any] = {}
        # Our own dispatcher, so that its worker threads start in start(), not here: a constructor that fails
        # (port in use) leaves no thread behind.
        self._threads = threads
        self._dispatcher = ThreadedTaskDispatcher()
        try:
            self._server = create_server(app, map=self._map, _dispatcher=self._dispatcher, **adjustments)
        except BaseException:
            close_all(self._map, ignore_all=True)
            raise
        self._listeners: list[Any] = [d for d in self._map.values() if isinstance(d, BaseWSGIServer)]
        hook = {"on_refused": staticmethod(on_refused)} if on_refused is not None else {}
        error_task = type("_BoundJsonErrorTask", (_JsonErrorTask,), hook)
        channel = type("_JsonErrorChannel", (HTTPChannel,), {"error_task_class": error_task})
        for listener in self._listeners:
            listener.channel_class = channel
        self._abort = threading.Event()
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._listeners[0].effective_port)

    @property
    def host(self) -> str:
        return str(self._listeners[0].effective_host)

    def start(self) -> None:
        if self.started or self._stopped:
            raise RuntimeError("HttpServer can be started once")
        self._dispatcher.set_thread_count(self._threads)
        super().start()
        log.info("REST API listening on %s:%d", self.host, self.port)

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self) -> None:
        while self._map and not self.stopping:
            loop(timeout=1.0, map=self._map, use_poll=True, count=1)
        for listener in self._listeners:  # stop accepting; keep the trigger and open connections
            dispatcher.close(listener)
        while self._map and not self._abort.is_set() and not self._idle():
            loop(timeout=0.05, map=self._map, use_poll=True, count=1)

    def wake(self) -> None:
        self._server.pull_trigger()

    def _idle(self) -> bool:
        """No request queued, running, or waiting for its response to be sent."""
        if self._dispatcher.queue:
            return False
        for obj in list(self._map.values()):
            if isinstance(obj, HTTPChannel) and (obj.requests or obj.total_outbufs_len):
                return False
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop within about `timeout` seconds; requests still running then are abandoned."""
        if self._stopped:
            return not self.is_alive()
        self._stopped = True
        deadline = time.monotonic() + timeout
        self.request_stop()
        if self.started and not self.join(max(0.0, deadline - time.monotonic())):
            log.warning("REST API: requests still running after %.1f s; closing their connections", timeout)
            self._abort.set()
            self.wake()
            self.join(1.0)
        self._dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        close_all(self._map, ignore_all=True)
        if self.is_alive():
            log.warning("REST API server thread did not stop")
        return not self.is_alive()
