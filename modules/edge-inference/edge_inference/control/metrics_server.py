"""`GET /metrics` on METRICS_PORT: the module's registry in Prometheus text format.

Port 9600 is the IoT Edge metrics-collector convention (edgeAgent and edgeHub expose theirs there too), so
the collector module scrapes `http://edge-inference:9600/metrics`. It is served on its own port, so that scrapes
never wait behind /predict requests, by the same hardened server as the REST API (http_server.py: deadlines for
a request head and body, a cap on connections per client address); the exposition itself is the official client
library's (`generate_latest`), made on a pool of SCRAPE_THREADS threads so a slow collector never stalls the
event loop. Any path answers with the metrics, gzip-compressed when the scraper asks for it.
"""

from __future__ import annotations

import gzip
import logging
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from tornado.ioloop import IOLoop
from tornado.web import Application, RequestHandler, stream_request_body

from edge_inference.control.http_server import ConnectionLimits, HardenedHttpServer
from edge_inference.workers import Supervisor

log = logging.getLogger(__name__)

SCRAPE_THREADS = 2


@stream_request_body  # a body sent with a scrape is dropped as it arrives, never kept
class _Scrape(RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD")

    def initialize(self, registry: CollectorRegistry, pool: ThreadPoolExecutor) -> None:
        self.registry = registry
        self.pool = pool

    def data_received(self, chunk: bytes) -> None:
        """Dropped."""

    def set_default_headers(self) -> None:
        self.clear_header("Server")

    async def get(self, _path: str = "") -> None:
        body: bytes = await IOLoop.current().run_in_executor(self.pool, generate_latest, self.registry)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        if "gzip" in self.request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            self.set_header("Content-Encoding", "gzip")
        self.finish(body)

    async def head(self, _path: str = "") -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish()


class MetricsServer:
    """Serves `registry` on `addr:port` on a worker thread of its own (`metrics-server`); `port` 0 binds any free
    port (see `.port`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        addr: str = "0.0.0.0",
        limits: ConnectionLimits | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.registry = registry
        self.addr = addr
        self.requested_port = port
        self.limits = limits or ConnectionLimits()
        self._pool: ThreadPoolExecutor | None = None
        self._server: HardenedHttpServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return self._server.port

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("MetricsServer can be started once")
        self._pool = ThreadPoolExecutor(SCRAPE_THREADS, thread_name_prefix="metrics-scrape")
        app = Application(
            [(r"/(.*)", _Scrape, {"registry": self.registry, "pool": self._pool})], log_function=lambda _handler: None
        )
        try:
            self._server = HardenedHttpServer(
                app,
                self.addr,
                self.requested_port,
                self.limits,
                name="metrics-server",
                setting="METRICS_PORT",
                supervisor=self.supervisor,
            )
            self._server.start()
        except BaseException:
            self._pool.shutdown(wait=False)
            raise
        log.info("Prometheus metrics on %s:%d/metrics", self.addr, self.port)

    def is_alive(self) -> bool:
        return self._server is not None and self._server.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.stop(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
