"""`GET /metrics` on METRICS_PORT: the module's registry in Prometheus text format.

Port 9600 is the IoT Edge metrics-collector convention (edgeAgent and edgeHub expose theirs there too), so
the collector module scrapes `http://edge-inference:9600/metrics`. The official client library's WSGI app
(`prometheus_client.make_wsgi_app`) answers any path with the metrics, gzip-compressed when asked; a small
threading WSGI server runs it on a worker thread (`metrics-server`), on its own port so that scrapes never
wait behind /predict requests.
"""

from __future__ import annotations

import logging
import socket
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape (daemons: a stuck scraper never holds the module's exit)."""

    daemon_threads = True


class _IPv6Server(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: object) -> None:
        return None


class MetricsServer(Worker):
    """Serves `registry` on `addr:port` on a worker thread; `port` 0 binds any free port (see `.port`)."""

    def __init__(
        self, registry: CollectorRegistry, port: int, addr: str = "0.0.0.0", supervisor: Supervisor | None = None
    ) -> None:
        super().__init__("metrics-server", supervisor, daemon=True)
        self.registry = registry
        self.addr = addr
        self.requested_port = port
        self._server: WSGIServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return int(self._server.server_port)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("MetricsServer can be started once")
        server_class = _IPv6Server if ":" in self.addr else _ThreadingServer
        self._server = make_server(
            self.addr, self.requested_port, make_wsgi_app(self.registry), server_class, handler_class=_QuietHandler
        )
        super().start()
        log.info("Prometheus metrics on %s:%d/metrics", self.addr, self.port)

    def run(self) -> None:
        assert self._server is not None
        self._server.serve_forever(poll_interval=0.5)

    def wake(self) -> None:
        if self._server is not None and self.is_alive():
            self._server.shutdown()  # returns once serve_forever has left its loop

    def teardown(self) -> None:
        if self._server is not None:
            self._server.server_close()

    def stop(self, timeout: float = 5.0) -> bool:
        if self._server is None:
            return True
        return super().stop(timeout)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
