"""REST API on HTTP_PORT: `POST /predict`, `GET /health`, `GET /ready`, served by waitress in a thread.

The drop-in for the classic "Flask + ONNX Runtime" container: `/predict` takes the image as multipart field
`image` (or as the raw body with an image content type) and answers with the module's one result schema.
It runs the same pipeline as the share frames (the `Predictor` seam), so HTTP and share frames share batches.

Statuses (every error body is `{"error": {"code": ..., "message": ...}}`):
    200  the result schema
    400  no image (`no_image`, `empty_file`), not an image or corrupt (`not_an_image`, `corrupt_image`),
         a bad `confidence` (`invalid_parameter`), a malformed request (`bad_request`)
    413  body over HTTP_MAX_BODY_MB (`body_too_large`: refused on Content-Length before the body is read,
         a chunked body cut off once it grows past the limit), image over MAX_IMAGE_PIXELS (`too_many_pixels`)
    415  a content type that is not multipart or an image (`unsupported_media_type`), an image format the
         decoder cannot handle (`unsupported_image`)
    503  not ready, or more than HTTP_MAX_CONCURRENCY requests in flight (`overloaded`), with Retry-After
    500  inference failed or a bug (`inference_failed`, `internal_error`)

Waitress reads each request whole before the app sees it, so the body limit is enforced there first
(`max_request_body_size`); its own error pages are replaced by the same JSON (`_JsonErrorTask`). The app
checks again so that it stays correct behind any other WSGI server.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, jsonify, request
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.wasyncore import close_all, dispatcher, loop
from werkzeug.exceptions import HTTPException

from edge_inference.control.protocols import Predictor
from edge_inference.errors import FrameError, UnavailableError
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.settings import Settings
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

# Raw bodies are taken with these content types; anything else that is not multipart gets 415.
RAW_IMAGE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/png",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/webp",
        "application/octet-stream",
    }
)
IMAGE_FIELD = "image"
PREDICT_TIMEOUT_SECONDS = 30.0
OVERLOAD_RETRY_AFTER_SECONDS = 1
# Threads beyond HTTP_MAX_CONCURRENCY, so that /health, /ready and the 503 answers never queue behind
# /predict requests that hold every slot.
SPARE_THREADS = 4
# A connection idle this long (a keep-alive client gone quiet, or one that announced a body and stopped
# sending) is closed; idle connections are looked for every IDLE_SWEEP_SECONDS (waitress channel_timeout and
# cleanup_interval; its defaults, 120 s and 30 s, let idle keep-alive clients hold the connection limit for
# minutes, during which no new client is accepted).
IDLE_CONNECTION_SECONDS = 30
IDLE_SWEEP_SECONDS = 5
# Open connections (idle keep-alive ones included) before waitress stops accepting (its default is 100).
CONNECTION_LIMIT = 1000

_ENDPOINTS = ("/predict", "/health", "/ready")

# FrameError codes that are not the client's "bad image" (400).
_FRAME_ERROR_STATUS = {
    FrameError.TOO_LARGE: 413,
    FrameError.TOO_MANY_PIXELS: 413,
    FrameError.UNSUPPORTED: 415,
    FrameError.INFERENCE_FAILED: 500,
    FrameError.READ_FAILED: 500,
}

# Waitress's own refusals (raised while parsing, before the app runs) and their error codes.
_SERVER_ERROR_CODES = {400: "bad_request", 413: "body_too_large", 431: "headers_too_large", 501: "not_implemented"}


@dataclass(frozen=True)
class ServerNeeds:
    """What the app asks of the server that runs it; `create_http_app` stores it in
    `app.extensions[SERVER_NEEDS]` and `HttpServer` applies it, so the app is served right however built."""

    max_body_bytes: int
    min_threads: int
    on_refused: Callable[[str, int], None]


SERVER_NEEDS = "edge_inference.control.http_api"


def max_body_bytes(settings: Settings) -> int:
    """HTTP_MAX_BODY_MB in bytes: the largest /predict body, whatever its encoding."""
    return max(1, int(settings.http_max_body_mb * 1024 * 1024))


def endpoint_label(path: str) -> str:
    """The `endpoint` metric label: a known route, else `other` (keeps the label set bounded)."""
    return path if path in _ENDPOINTS else "other"


def frame_error_status(code: str) -> int:
    return _FRAME_ERROR_STATUS.get(code, 400)


def _error(status: int, code: str, message: str, retry_after: float | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    g.error_code = code
    return response


def create_http_app(
    predictor: Predictor,
    metrics: MetricsRegistry,
    settings: Settings,
    *,
    predict_timeout: float = PREDICT_TIMEOUT_SECONDS,
) -> Flask:
    """The Flask app of the REST API. Nothing is served until an `HttpServer` runs it."""
    app = Flask("edge_inference.control.http_api")
    limit = max_body_bytes(settings)
    app.config["MAX_CONTENT_LENGTH"] = limit
    app.config["MAX_FORM_PARTS"] = 32
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the result schema's order
    app.json.compact = True  # type: ignore[attr-defined]
    slots = threading.BoundedSemaphore(settings.http_max_concurrency)
    accepted = ", ".join(sorted(RAW_IMAGE_TYPES))

    @app.before_request
    def _started() -> None:
        g.started = time.perf_counter()
        g.error_code = None

    @app.after_request
    def _finished(response: Response) -> Response:
        endpoint = endpoint_label(request.path)
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.http_requests.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        metrics.http_seconds.labels(endpoint=endpoint).observe(elapsed)
        level = logging.WARNING if response.status_code >= 400 else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s %s -> %d %s (%d bytes in, %.1f ms)",
                request.remote_addr,
                request.method,
                request.path,
                response.status_code,
                g.get("error_code") or "",
                request.content_length or 0,
                elapsed * 1000.0,
            )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        message = exc.description or exc.name
        if status == 413:
            message = f"the body is larger than HTTP_MAX_BODY_MB ({settings.http_max_body_mb:g} MB)"
        response = _error(status, codes.get(status, "bad_request" if status < 500 else "internal_error"), message)
        if status == 405 and exc.response is None:
            allowed = exc.get_headers()
            for name, value in allowed:
                if name.lower() == "allow":
                    response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.path, exc_info=exc)
        return _error(500, "internal_error", "internal error (logged by the module)")

    @app.get("/health")
    def health() -> Response:
        try:
            provider = predictor.active_provider()
        except Exception:  # liveness must answer whatever the pipeline's state
            log.exception("active_provider() failed")
            provider = "unknown"
        return jsonify({"status": "healthy", "gpu": provider})

    @app.get("/ready")
    def ready() -> Response:
        is_ready, reason = predictor.readiness()
        if is_ready:
            return jsonify({"ready": True})
        response = jsonify({"ready": False, "reason": reason})
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        g.error_code = "not_ready"
        return response

    @app.post("/predict")
    def predict() -> Response:
        confidence_text = request.args.get("confidence")
        confidence: float | None = None
        if confidence_text is not None:
            try:
                confidence = float(confidence_text)
            except ValueError:
                confidence = math.nan
            if not 0.0 <= confidence <= 1.0:  # also false for NaN
                return _error(400, "invalid_parameter", f"confidence={confidence_text!r}: expected 0..1")

        if request.content_length is not None and request.content_length > limit:
            return _error(
                413, "body_too_large", f"the body is larger than HTTP_MAX_BODY_MB ({settings.http_max_body_mb:g} MB)"
            )
        mimetype = request.mimetype
        multipart = mimetype == "multipart/form-data"
        if not multipart and mimetype not in RAW_IMAGE_TYPES:
            shown = mimetype or "none"
            return _error(
                415,
                "unsupported_media_type",
                f"content type {shown!r}: send multipart/form-data with field 'image', or the raw image "
                f"with one of: {accepted}",
            )

        if not slots.acquire(blocking=False):
            return _error(
                503,
                "overloaded",
                f"more than HTTP_MAX_CONCURRENCY ({settings.http_max_concurrency}) requests in flight",
                retry_after=OVERLOAD_RETRY_AFTER_SECONDS,
            )
        metrics.http_in_flight.inc()
        try:
            data_or_error = _read_image(limit) if not multipart else _read_multipart_image()
            if isinstance(data_or_error, Response):
                return data_or_error
            try:
                result = predictor.predict(data_or_error, confidence=confidence, timeout=predict_timeout)
            except FrameError as exc:
                return _error(frame_error_status(exc.code), exc.code, exc.message)
            except UnavailableError as exc:
                return _error(503, "unavailable", str(exc), retry_after=exc.retry_after)
        finally:
            metrics.http_in_flight.dec()
            slots.release()

        response = jsonify(result.as_dict())
        if result.error is not None:  # a predictor that reports the failure in the result instead of raising
            response.status_code = frame_error_status(result.error.get("code", ""))
            g.error_code = result.error.get("code")
        return response

    def refused(path: str, status: int) -> None:
        metrics.http_requests.labels(endpoint=endpoint_label(path), status=str(status)).inc()
        log.warning("%s refused by the server -> %d", path or "request", status)

    app.extensions[SERVER_NEEDS] = ServerNeeds(limit, settings.http_max_concurrency + SPARE_THREADS, refused)
    return app


def _read_image(limit: int) -> bytes | Response:
    """The raw body, refused when it grows past `limit` (a server that passes chunked bodies through)."""
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        return _error(413, "body_too_large", "the body is larger than HTTP_MAX_BODY_MB")
    if not data:
        return _error(400, FrameError.EMPTY, "the body is empty: send the image bytes")
    return data


def _read_multipart_image() -> bytes | Response:
    """The `image` part (or the only file part, whatever its name) of a multipart body."""
    files = request.files
    storage = files.get(IMAGE_FIELD)
    if storage is None and len(files) == 1:
        storage = next(iter(files.values()))
    if storage is None:
        names = ", ".join(sorted(files.keys())) or "none"
        return _error(400, "no_image", f"no multipart field '{IMAGE_FIELD}' (file fields sent: {names})")
    data: bytes = storage.read()
    if not data:
        return _error(400, FrameError.EMPTY, f"the multipart field '{IMAGE_FIELD}' is empty")
    return data


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


def build_http_server(
    predictor: Predictor, metrics: MetricsRegistry, settings: Settings, supervisor: Supervisor | None = None
) -> HttpServer:
    """The REST API as the module runs it, on HTTP_HOST:HTTP_PORT, sized by the settings. Not started."""
    app = create_http_app(predictor, metrics, settings)
    return HttpServer(
        app,
        settings.http_host,
        settings.http_port,
        settings.http_max_concurrency + SPARE_THREADS,
        supervisor=supervisor,
    )
