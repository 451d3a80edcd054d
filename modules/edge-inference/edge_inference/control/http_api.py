"""REST API on HTTP_PORT: `POST /predict`, `GET /health`, `GET /ready` (served by control/http_server.py).

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
(`ServerNeeds`, applied by `HttpServer`); its own error pages are the same JSON. The app checks again so that
it stays correct behind any other WSGI server.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from edge_inference.control.http_server import SERVER_NEEDS, HttpServer, ServerNeeds
from edge_inference.control.protocols import Predictor
from edge_inference.errors import FrameError, UnavailableError
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
PREDICT_TIMEOUT_SECONDS = 30.0
OVERLOAD_RETRY_AFTER_SECONDS = 1
# Threads beyond HTTP_MAX_CONCURRENCY, so that /health, /ready and the 503 answers never queue behind
# /predict requests that hold every slot.
SPARE_THREADS = 4

_ENDPOINTS = ("/predict", "/health", "/ready")

# FrameError codes that are not the client's "bad image" (400).
_FRAME_ERROR_STATUS = {
    FrameError.TOO_LARGE: 413,
    FrameError.TOO_MANY_PIXELS: 413,
    FrameError.UNSUPPORTED: 415,
    FrameError.INFERENCE_FAILED: 500,
    FrameError.READ_FAILED: 500,
}


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
