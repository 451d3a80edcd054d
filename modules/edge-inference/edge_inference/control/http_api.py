"""REST API on HTTP_PORT: `POST /predict`, `GET /health`, `GET /ready`, served by http_server.py (Tornado).

The drop-in for the classic "Flask + ONNX Runtime" container: `/predict` takes the image as multipart field
`image` (or as the raw body with an image content type) and answers with the module's one result schema.
It runs the same pipeline as the share frames (the `Predictor` seam), so HTTP and share frames share batches.

Statuses (every error body is `{"error": {"code": ..., "message": ...}}`):
    200  the result schema
    400  no image (`no_image`, `empty_file`), not an image or corrupt (`not_an_image`, `corrupt_image`),
         a bad `confidence` (`invalid_parameter`), a malformed request or multipart body (`bad_request`)
    413  body over HTTP_MAX_BODY_MB (`body_too_large`: refused on Content-Length before the body is read, a
         chunked body cut off once it grows past the limit), a multipart body of more than MAX_FORM_PARTS parts
         (`too_many_parts`), an image over MAX_IMAGE_PIXELS (`too_many_pixels`), JPEG_MAX_SCANS
         (`too_many_scans`) or MAX_DECODE_MB (`decode_memory_over_limit`)
    415  a content type that is not multipart or an image (`unsupported_media_type`), an image format the
         decoder cannot handle (`unsupported_image`)
    422  the decode ran past DECODE_TIMEOUT_SECONDS (`decode_timeout`)
    503  not ready, more than HTTP_MAX_CONCURRENCY requests in flight (`overloaded`), or the decode budget
         taken (`unavailable`), with Retry-After
    500  inference failed or a bug (`inference_failed`, `internal_error`)

Order of a /predict request: the headers arrive; the query, Content-Length and content type are checked; a
concurrency slot is taken (503 at once when none is free); only then is the body read, into memory, counted
against HTTP_MAX_BODY_MB as it arrives. Nothing is spooled for a request without a slot. The prediction runs on
a pool of HTTP_MAX_CONCURRENCY threads, so the event loop, and with it /health and /ready, never waits for it.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from typing import Any

from tornado import httputil
from tornado.ioloop import IOLoop
from tornado.web import Application

from edge_inference.control.http_auth import ApiKey, tls_context
from edge_inference.control.http_base import ENDPOINTS, Api, ApiHandler
from edge_inference.control.http_server import ConnectionLimits, HardenedHttpServer
from edge_inference.control.page_api import PageApp, PageSources
from edge_inference.control.protocols import Predictor
from edge_inference.entities import FrameResult
from edge_inference.errors import FrameError, SettingsError, UnavailableError
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.settings import Settings
from edge_inference.workers import Supervisor

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
MAX_FORM_PARTS = 32
PREDICT_TIMEOUT_SECONDS = 30.0
OVERLOAD_RETRY_AFTER_SECONDS = 1

# FrameError codes that are not the client's "bad image" (400).
_FRAME_ERROR_STATUS = {
    FrameError.TOO_LARGE: 413,
    FrameError.TOO_MANY_PIXELS: 413,
    FrameError.TOO_MANY_SCANS: 413,
    FrameError.DECODE_MEMORY: 413,
    FrameError.UNSUPPORTED: 415,
    FrameError.DECODE_TIMEOUT: 422,
    FrameError.INFERENCE_FAILED: 500,
    FrameError.READ_FAILED: 500,
    FrameError.PREPARE_FAILED: 500,
    FrameError.POSTPROCESS_FAILED: 500,
}


def max_body_bytes(settings: Settings) -> int:
    """HTTP_MAX_BODY_MB in bytes: the largest /predict body, whatever its encoding."""
    return max(1, int(settings.http_max_body_mb * 1024 * 1024))


def frame_error_status(code: str) -> int:
    return _FRAME_ERROR_STATUS.get(code, 400)


class _Health(ApiHandler):
    protected = False  # the container's health check

    def get(self) -> None:
        try:
            provider = self.api.predictor.active_provider()
        except Exception:  # liveness must answer whatever the pipeline's state
            log.exception("active_provider() failed")
            provider = "unknown"
        self.json(200, {"status": "healthy", "gpu": provider})


class _Ready(ApiHandler):
    protected = False

    def get(self) -> None:
        is_ready, reason = self.api.predictor.readiness()
        if is_ready:
            self.json(200, {"ready": True})
        else:
            self.error_code = "not_ready"
            self.json(503, {"ready": False, "reason": reason}, retry_after=5)


class _NotFound(ApiHandler):
    protected = False

    def prepare(self) -> None:
        self.error(404, "not_found", f"no such endpoint (there are: {', '.join(ENDPOINTS)})")


class _Predict(ApiHandler):
    """/predict: checks on the headers, a slot, then the body into memory, then the pipeline on the pool."""

    def prepare(self) -> None:
        self.body = bytearray()
        self.slot = False
        self.posting = False
        self.confidence: float | None = None
        if self.request.method != "POST" or not self.authorized():
            return  # Tornado answers 405; or the 401 is sent
        api = self.api
        text = self.get_query_argument("confidence", None)
        if text is not None:
            try:
                self.confidence = float(text)
            except ValueError:
                self.confidence = math.nan
            if not 0.0 <= self.confidence <= 1.0:  # also false for NaN
                self.error(400, "invalid_parameter", f"confidence={text!r}: expected 0..1")
                return
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > api.limit:
            self._too_large()
            return
        header = Message()
        header["Content-Type"] = self.request.headers.get("Content-Type", "")
        declared_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip()
        content_type = header.get_content_type() if declared_type else ""
        self.multipart = content_type == "multipart/form-data"
        boundary = header.get_param("boundary") if self.multipart else None
        self.boundary = boundary if isinstance(boundary, str) else ""
        if not self.multipart and content_type not in RAW_IMAGE_TYPES:
            self.error(
                415,
                "unsupported_media_type",
                f"content type {content_type or 'none'!r}: send multipart/form-data with field 'image', or the raw "
                f"image with one of: {', '.join(sorted(RAW_IMAGE_TYPES))}",
            )
            return
        if not api.slots.acquire(blocking=False):
            self.error(
                503,
                "overloaded",
                f"more than HTTP_MAX_CONCURRENCY ({api.settings.http_max_concurrency}) requests in flight",
                retry_after=OVERLOAD_RETRY_AFTER_SECONDS,
            )
            return
        self.slot = True
        api.in_flight += 1
        api.metrics.http_in_flight.inc()

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return  # refused already: the rest of the body is dropped as it arrives
        self.body += chunk
        if len(self.body) > self.api.limit:
            self.body = bytearray()
            self._too_large()

    async def post(self) -> None:
        if self._finished:
            self._release()
            return
        self.posting = True
        try:
            data = self._image()
            if data is None:
                return
            api = self.api
            try:
                result: FrameResult = await IOLoop.current().run_in_executor(api.pool, self._predict, data)
            except FrameError as exc:
                self.error(frame_error_status(exc.code), exc.code, exc.message)
                return
            except UnavailableError as exc:
                self.error(503, "unavailable", str(exc), retry_after=exc.retry_after)
                return
            body = result.as_dict()
            if result.error is not None:  # a predictor that reports the failure in the result instead of raising
                self.error_code = result.error.get("code")
                self.json(frame_error_status(result.error.get("code", "")), body)
            else:
                self.json(200, body)
        finally:
            self._release()

    def _predict(self, data: bytes) -> FrameResult:
        return self.api.predictor.predict(data, confidence=self.confidence, timeout=self.api.predict_timeout)

    def _image(self) -> bytes | None:
        """The raw body, or the `image` part (or the only file part, whatever its name) of a multipart body."""
        if not self.multipart:
            if not self.body:
                self.error(400, FrameError.EMPTY, "the body is empty: send the image bytes")
                return None
            return bytes(self.body)
        body, self.body = bytes(self.body), bytearray()
        marker = b"--" + self.boundary.encode("latin-1", "replace")
        if self.boundary and body.count(marker) - 1 > MAX_FORM_PARTS:
            self.error(413, "too_many_parts", f"more than {MAX_FORM_PARTS} parts in the multipart body")
            return None
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        # Tornado counts the preamble before the first boundary as a part too: one more than MAX_FORM_PARTS
        config = httputil.ParseBodyConfig(multipart=httputil.ParseMultipartConfig(max_parts=MAX_FORM_PARTS + 1))
        try:
            httputil.parse_body_arguments(self.request.headers["Content-Type"], body, arguments, files, config=config)
        except (httputil.HTTPInputError, UnicodeDecodeError, ValueError) as exc:
            self.error(400, "bad_request", f"malformed multipart body: {exc}")
            return None
        parts = files.get(IMAGE_FIELD) or (next(iter(files.values())) if len(files) == 1 else None)
        if not parts:
            names = ", ".join(sorted(files)) or "none"
            self.error(400, "no_image", f"no multipart field '{IMAGE_FIELD}' (file fields sent: {names})")
            return None
        if not parts[0].body:
            self.error(400, FrameError.EMPTY, f"the multipart field '{IMAGE_FIELD}' is empty")
            return None
        return bytes(parts[0].body)

    def _too_large(self) -> None:
        self.error(
            413,
            "body_too_large",
            f"the body is larger than HTTP_MAX_BODY_MB ({self.api.settings.http_max_body_mb:g} MB)",
        )

    def _release(self) -> None:
        if self.slot:
            self.slot = False
            self.api.in_flight -= 1
            self.api.metrics.http_in_flight.dec()
            self.api.slots.release()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self.posting:  # the client went away mid-upload: its slot is free again (post() frees its own)
            self._release()


def create_http_app(
    predictor: Predictor,
    metrics: MetricsRegistry,
    settings: Settings,
    *,
    predict_timeout: float = PREDICT_TIMEOUT_SECONDS,
    page: PageApp | None = None,
) -> tuple[Application, Api]:
    """The Tornado app of the REST API (and the live page, when given) and its shared state. Nothing is served
    until an `HttpServer` runs it."""
    api = Api(
        predictor,
        metrics,
        settings,
        max_body_bytes(settings),
        predict_timeout,
        threading.BoundedSemaphore(settings.http_max_concurrency),
        ThreadPoolExecutor(settings.http_max_concurrency, thread_name_prefix="http-predict"),
        ApiKey(settings.http_api_key, "HTTP_API_KEY"),
    )
    handlers: list[Any] = [(path, handler, {"api": api}) for path, handler in _ROUTES.items()]
    if page is not None:
        handlers += page.routes(api)
    app = Application(
        handlers,
        default_handler_class=_NotFound,
        default_handler_args={"api": api},
        log_function=lambda _handler: None,  # each request is logged (and counted) once, by the handler
    )
    return app, api


_ROUTES: dict[str, type[ApiHandler]] = {"/predict": _Predict, "/health": _Health, "/ready": _Ready}


class HttpServer(HardenedHttpServer):
    """The REST API (and the live page, given its sources) as the module runs it: the app, its pools, and the
    hardened server (`http-api`), over HTTPS when HTTP_TLS_CERT / HTTP_TLS_KEY are set."""

    def __init__(
        self,
        predictor: Predictor,
        metrics: MetricsRegistry,
        settings: Settings,
        supervisor: Supervisor | None = None,
        page: PageSources | None = None,
    ) -> None:
        try:
            tls = tls_context(settings.http_tls_cert, settings.http_tls_key)
        except ValueError as exc:
            raise SettingsError([str(exc)]) from None
        self.page = PageApp(page) if page is not None else None
        app, self.api = create_http_app(predictor, metrics, settings, page=self.page)
        self.scheme = "https" if tls is not None else "http"
        try:
            super().__init__(
                app,
                settings.http_host,
                settings.http_port,
                ConnectionLimits.from_settings(settings),
                name="http-api",
                busy=lambda: self.api.in_flight > 0,
                supervisor=supervisor,
                ssl_context=tls,
            )
        except BaseException:
            self._close_pools()
            raise
        if not self.api.key.required:
            log.warning(
                "HTTP_API_KEY is not set: /predict and the live page are open to anyone who reaches port %d",
                settings.http_port,
            )

    def start(self) -> None:
        super().start()
        log.info("REST API%s on %s://%s:%d", " and live page" if self.page else "", self.scheme, self.host, self.port)

    def stop(self, timeout: float = 5.0) -> bool:
        stopped = super().stop(timeout)
        self._close_pools()
        return stopped

    def _close_pools(self) -> None:
        self.api.pool.shutdown(wait=False, cancel_futures=True)
        if self.page is not None:
            self.page.close()


def build_http_server(
    predictor: Predictor,
    metrics: MetricsRegistry,
    settings: Settings,
    supervisor: Supervisor | None = None,
    page: PageSources | None = None,
) -> HttpServer:
    """The REST API as the module runs it, on HTTP_HOST:HTTP_PORT, sized by the settings. Not started."""
    return HttpServer(predictor, metrics, settings, supervisor, page)
