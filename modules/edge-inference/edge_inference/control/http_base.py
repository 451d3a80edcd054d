"""What every handler of the REST API and the live page shares: the app's state (`Api`), the JSON answers and
errors (`{"error": {"code": ..., "message": ...}}`), the per-request count and log line, and the key check.

A handler is protected by HTTP_API_KEY unless it says `protected = False` (/health, /ready, unknown paths): its
`prepare` answers 401 before the route's own code runs, and before any body is read (control/http_auth.py).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import responses
from typing import Any, ClassVar

from tornado.web import HTTPError, RequestHandler, stream_request_body

from edge_inference.control.http_auth import CHALLENGES, ApiKey
from edge_inference.control.protocols import Predictor
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.settings import Settings

log = logging.getLogger("edge_inference.control.http_api")

ENDPOINTS = ("/predict", "/health", "/ready", "/", "/api/status", "/api/frames")
_HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def endpoint_label(path: str) -> str:
    """The `endpoint` metric label: a known route (one label for every frame's and every page file's), else
    `other` (keeps the label set bounded)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/api/frames/"):
        return "/api/frames/{id}"
    if path.startswith("/page/"):
        return "/page/{file}"
    return "other"


@dataclass
class Api:
    """What every handler of one app shares."""

    predictor: Predictor
    metrics: MetricsRegistry
    settings: Settings
    limit: int
    predict_timeout: float
    slots: threading.BoundedSemaphore
    pool: ThreadPoolExecutor
    key: ApiKey
    in_flight: int = 0


@stream_request_body  # every handler sees the headers before the body: nothing is buffered unasked
class ApiHandler(RequestHandler):
    protected: ClassVar[bool] = True  # HTTP_API_KEY asked for (when set)

    def initialize(self, api: Api) -> None:
        self.api = api
        self.started = time.perf_counter()
        self.error_code: str | None = None

    def prepare(self) -> None:
        if self.protected and not self.authorized():
            return

    def authorized(self) -> bool:
        """True when the request may pass; else the 401 is sent (the caller stops)."""
        authorization = self.request.headers.get("Authorization")
        if self.api.key.allows(authorization):
            return True
        for challenge in CHALLENGES:
            self.add_header("WWW-Authenticate", challenge)
        self.error(401, *self.api.key.refusal(sent=authorization is not None))
        return False

    def data_received(self, chunk: bytes) -> None:
        """Bodies sent to the GET endpoints are read and dropped, never kept."""

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def json(self, status: int, body: Any, retry_after: float | None = None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        if retry_after is not None:
            self.set_header("Retry-After", str(max(1, math.ceil(retry_after))))
        self._count(status)  # counted before the client can see the answer
        self.finish(json.dumps(body, separators=(",", ":")))

    def error(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        self.error_code = code
        self.json(status, {"error": {"code": code, "message": message}}, retry_after)

    def send(self, content_type: str, body: bytes | str) -> None:
        """A 200 that is not JSON (the page, its files, pictures)."""
        self.set_header("Content-Type", content_type)
        self._count(200)
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado's own refusals (404, 405) and anything a handler raised, as the API's JSON error."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 405:
            allowed = [m for m in ("GET", "POST") if type(self).__dict__.get(m.lower())]
            self.set_header("Allow", ", ".join(allowed))
        if isinstance(exc, HTTPError) or exc is None:
            code = _HTTP_ERROR_CODES.get(status_code, "bad_request" if status_code < 500 else "internal_error")
            message = (exc.log_message if isinstance(exc, HTTPError) else None) or responses.get(status_code, "error")
            self.error(status_code, code, message)
            return
        log.error("%s %s failed", self.request.method, endpoint_label(self.request.path), exc_info=exc)
        self.error(500, "internal_error", "internal error (logged by the module)")

    def _count(self, status: int) -> None:
        endpoint = endpoint_label(self.request.path)
        elapsed = time.perf_counter() - self.started
        self.api.metrics.http_requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.api.metrics.http_seconds.labels(endpoint=endpoint).observe(elapsed)
        level = logging.WARNING if status >= 400 else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s %s -> %d %s (%s bytes in, %.1f ms)",
                self.request.remote_ip,
                self.request.method,
                endpoint,
                status,
                self.error_code or "",
                self.request.headers.get("Content-Length", "?"),
                elapsed * 1000.0,
            )
