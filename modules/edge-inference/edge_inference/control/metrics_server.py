"""`GET /metrics` on METRICS_PORT: the module's registry in Prometheus text format.

Port 9600 is the IoT Edge metrics-collector convention (edgeAgent and edgeHub expose theirs there too), so
the collector module scrapes `http://edge-inference:9600/metrics`. Served by the official client library's
own small threaded server (`prometheus_client.start_http_server`), on its own port so that scrapes never
wait behind /predict requests; it answers any path with the metrics, gzip-compressed when asked.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


class MetricsServer:
    """Serves `registry` on `addr:port` in a daemon thread; `port` 0 binds any free port (see `.port`)."""

    def __init__(self, registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:
        self.registry = registry
        self.addr = addr
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return int(self._server.server_port)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("MetricsServer can be started once")
        self._server, self._thread = start_http_server(self.requested_port, self.addr, self.registry)
        self._thread.name = "metrics-server"
        log.info("Prometheus metrics on %s:%d/metrics", self.addr, self.port)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()  # returns once serve_forever has left its loop (it polls every 0.5 s)
        server.server_close()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("metrics server thread did not stop within %.1f s", timeout)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
