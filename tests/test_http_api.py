"""The REST API over real HTTP on loopback: the Tornado server on port 0, requests as the client.

The predictor behind it is the one seam faked here, and only thinly: it really decodes the posted bytes with
OpenCV and "detects" the bright rectangle drawn into the test image, so a result that comes back proves the
image crossed the HTTP layer intact. The full pipeline behind /predict is tested in test_http_e2e.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import requests

from edge_inference.control.http_api import HttpServer, build_http_server
from edge_inference.entities import FrameResult
from edge_inference.errors import FrameError, PortInUseError
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.settings import Settings
from tests.http_support import (
    BOX,
    JPEG,
    PNG,
    DecodingPredictor,
    assert_no_new_threads,
    closed_by_server,
    connect_from,
    encode,
)


class Api:
    def __init__(self, server: HttpServer, predictor: DecodingPredictor, metrics: MetricsRegistry) -> None:
        self.server = server
        self.predictor = predictor
        self.metrics = metrics
        self.url = f"http://127.0.0.1:{server.port}"

    def count(self, endpoint: str, status: int) -> float:
        value = self.metrics.registry.get_sample_value(
            "edge_inference_http_requests_total", {"endpoint": endpoint, "status": str(status)}
        )
        return value or 0.0


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert_no_new_threads(before)


@pytest.fixture
def serve() -> Iterator[Callable[..., Api]]:
    servers: list[HttpServer] = []

    def start(predictor: DecodingPredictor | None = None, **overrides: Any) -> Api:
        settings = Settings(http_host="127.0.0.1", http_port=0, **overrides)
        predictor = predictor or DecodingPredictor()
        metrics = MetricsRegistry()
        server = build_http_server(predictor, metrics, settings)
        servers.append(server)
        server.start()
        return Api(server, predictor, metrics)

    yield start
    for server in servers:
        server.stop(timeout=2.0)


def raw_exchange(
    port: int, head: bytes, chunks: Sequence[bytes] = (), timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send `head` (and body chunks) on a plain socket; return the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server refused and closed: read its answer
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        header_blob, _, body = data.partition(b"\r\n\r\n")
        lines = header_blob.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            part = sock.recv(65536)
            if not part:
                break
            body += part
        return status, headers, body


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


def assert_detected_box(result: dict[str, Any]) -> None:
    assert result["schemaVersion"] == "1.1"
    assert result["frame"]["width"] == 160 and result["frame"]["height"] == 120
    assert result["frame"]["path"].startswith("http/")
    assert result["count"] == 1
    box = result["detections"][0]["box"]
    assert box == pytest.approx(list(BOX), abs=2.0)  # JPEG blurs the edge by a pixel


# ---------------------------------------------------------------------------------------------- 200


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("form", ["multipart", "raw"])
def test_predict_answers_result_schema_for_multipart_and_raw_images(
    serve: Callable[..., Api], fmt: str, form: str
) -> None:
    # given a running API and a JPEG or PNG with a bright rectangle
    api = serve()
    data = JPEG if fmt == "jpeg" else PNG
    # when it is posted as the Flask sample's multipart field `image`, or as the raw body
    if form == "multipart":
        response = requests.post(f"{api.url}/predict", files={"image": (f"f.{fmt}", data, f"image/{fmt}")}, timeout=10)
    else:
        response = requests.post(f"{api.url}/predict", data=data, headers={"Content-Type": f"image/{fmt}"}, timeout=10)
    # then the result schema comes back with the rectangle found where it was drawn
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    result = response.json()
    assert list(result) == [
        "schemaVersion",
        "frame",
        "model",
        "profile",
        "thresholds",
        "detections",
        "count",
        "timingsMs",
        "processedAt",
    ]
    assert_detected_box(result)
    assert result["frame"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert api.count("/predict", 200) == 1


@pytest.mark.timeout(30)
def test_predict_takes_octet_stream_and_a_single_file_part_of_another_name(serve: Callable[..., Api]) -> None:
    api = serve()
    raw = requests.post(
        f"{api.url}/predict", data=JPEG, headers={"Content-Type": "application/octet-stream"}, timeout=10
    )
    assert raw.status_code == 200, raw.text
    other_name = requests.post(f"{api.url}/predict", files={"file": ("a.jpg", JPEG)}, timeout=10)
    assert other_name.status_code == 200, other_name.text
    assert_detected_box(other_name.json())


@pytest.mark.timeout(30)
def test_confidence_query_applies_to_that_request_only(serve: Callable[..., Api]) -> None:
    api = serve()
    with_conf = requests.post(f"{api.url}/predict?confidence=0.8", files={"image": ("a.png", PNG)}, timeout=10)
    without = requests.post(f"{api.url}/predict", files={"image": ("a.png", PNG)}, timeout=10)
    assert with_conf.status_code == 200 and without.status_code == 200
    assert api.predictor.confidences == [0.8, None]
    assert with_conf.json()["thresholds"]["confidence"] == 0.8
    for bad in ("1.5", "-0.1", "nan", "high"):
        response = requests.post(f"{api.url}/predict?confidence={bad}", files={"image": ("a.png", PNG)}, timeout=10)
        assert_error(response, 400, "invalid_parameter")
    assert api.predictor.confidences == [0.8, None]  # refused before the pipeline


# ---------------------------------------------------------------------------------------------- 400


@pytest.mark.timeout(30)
def test_no_image_is_400(serve: Callable[..., Api]) -> None:
    api = serve()
    no_field = requests.post(f"{api.url}/predict", files={"a": ("a.txt", b"x"), "b": ("b.txt", b"y")}, timeout=10)
    assert "file fields sent: a, b" in assert_error(no_field, 400, "no_image")["error"]["message"]
    only_form = requests.post(f"{api.url}/predict", data={"x": "1"}, files={}, timeout=10)
    assert only_form.status_code in (400, 415)  # urlencoded form: not multipart, not an image
    empty_part = requests.post(f"{api.url}/predict", files={"image": ("a.jpg", b"")}, timeout=10)
    assert_error(empty_part, 400, FrameError.EMPTY)
    empty_raw = requests.post(f"{api.url}/predict", data=b"", headers={"Content-Type": "image/jpeg"}, timeout=10)
    assert_error(empty_raw, 400, FrameError.EMPTY)
    assert api.count("/predict", 400) == 3


@pytest.mark.timeout(30)
def test_bytes_that_lie_about_being_an_image_are_400(serve: Callable[..., Api]) -> None:
    api = serve()
    garbage = b"this is not a jpeg at all" * 40
    raw = requests.post(f"{api.url}/predict", data=garbage, headers={"Content-Type": "image/jpeg"}, timeout=10)
    assert_error(raw, 400, FrameError.NOT_AN_IMAGE)
    part = requests.post(f"{api.url}/predict", files={"image": ("x.png", garbage, "image/png")}, timeout=10)
    assert_error(part, 400, FrameError.NOT_AN_IMAGE)


@pytest.mark.timeout(30)
def test_body_shorter_than_content_length_claims_ends_in_4xx_not_a_hang(serve: Callable[..., Api]) -> None:
    # given a PNG whose Content-Length says half its size (the rest arrives as if it were a next request)
    api = serve()
    half = len(PNG) // 2
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {half}\r\n\r\n").encode()
    # when it is sent
    status, headers, body = raw_exchange(api.server.port, head + PNG)
    # then the truncated image is refused as not an image
    assert status == 400
    assert b'"not_an_image"' in body
    assert headers["content-type"].startswith("application/json")


# ---------------------------------------------------------------------------------------------- 413


@pytest.mark.timeout(30)
def test_content_length_over_limit_is_413_before_the_body_is_sent(serve: Callable[..., Api]) -> None:
    # given a limit of 0.05 MB
    api = serve(http_max_body_mb=0.05)
    limit = int(0.05 * 1024 * 1024)
    # when only the headers of a larger upload are sent
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {limit + 1}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, headers, body = raw_exchange(api.server.port, head)
    # then the answer is a JSON 413 at once, without waiting for a byte of the body
    assert time.monotonic() - started < 2.0
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert b'"body_too_large"' in body
    assert api.count("/predict", 413) == 1
    assert api.predictor.confidences == []


@pytest.mark.timeout(30)
def test_chunked_body_growing_past_limit_is_cut_off_with_413(serve: Callable[..., Api]) -> None:
    api = serve(http_max_body_mb=0.05)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (16384, b"\xff" * 16384)
    status, _, body = raw_exchange(api.server.port, head, [chunk] * 8)  # 128 KiB, never terminated
    assert status == 413
    assert b'"body_too_large"' in body
    assert api.predictor.confidences == []


@pytest.mark.timeout(30)
def test_real_upload_over_limit_is_413_and_chunked_under_limit_is_served(serve: Callable[..., Api]) -> None:
    api = serve(http_max_body_mb=0.05)
    big = encode(np.random.default_rng(1).integers(0, 255, (400, 400, 3), dtype=np.uint8), ".png")
    assert len(big) > 0.05 * 1024 * 1024
    try:
        response = requests.post(f"{api.url}/predict", data=big, headers={"Content-Type": "image/png"}, timeout=10)
        assert_error(response, 413, "body_too_large")
    except requests.ConnectionError:
        # The server answered 413 and closed while the client was still sending: also a refusal.
        pass
    assert api.count("/predict", 413) == 1

    def chunks() -> Iterator[bytes]:
        yield JPEG[:1000]
        yield JPEG[1000:]

    chunked = requests.post(f"{api.url}/predict", data=chunks(), headers={"Content-Type": "image/jpeg"}, timeout=10)
    assert chunked.status_code == 200, chunked.text
    assert_detected_box(chunked.json())


# ---------------------------------------------------------------------------------------------- 415


@pytest.mark.timeout(30)
@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(serve: Callable[..., Api], content_type: str | None) -> None:
    api = serve()
    headers = {"Content-Type": content_type} if content_type else {}
    session = requests.Session()
    prepared = requests.Request("POST", f"{api.url}/predict", data=JPEG, headers=headers).prepare()
    if content_type is None:
        prepared.headers.pop("Content-Type", None)
    response = session.send(prepared, timeout=10)
    body = assert_error(response, 415, "unsupported_media_type")
    assert "multipart/form-data" in body["error"]["message"]
    assert api.predictor.confidences == []


# ---------------------------------------------------------------------------------------------- 503


@pytest.mark.timeout(30)
def test_over_concurrency_is_503_with_retry_after_and_the_rest_complete(serve: Callable[..., Api]) -> None:
    # given at most 2 requests in flight and a pipeline that holds them until released
    predictor = DecodingPredictor()
    predictor.gate = threading.Event()
    api = serve(predictor, http_max_concurrency=2)

    def post() -> requests.Response:
        return requests.post(f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=15)

    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post) for _ in range(2)]
        for _ in range(2):
            assert predictor.entered.acquire(timeout=5)
        assert api.metrics.http_in_flight._value.get() == 2
        # when a third arrives
        third = post()
        # then it is refused with 503 + Retry-After while liveness still answers
        body = assert_error(third, 503, "overloaded")
        assert "HTTP_MAX_CONCURRENCY (2)" in body["error"]["message"]
        assert third.headers["Retry-After"] == "1"
        assert requests.get(f"{api.url}/health", timeout=5).status_code == 200
        predictor.gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
    assert post().status_code == 200  # slots released
    assert api.count("/predict", 503) == 1 and api.count("/predict", 200) == 3


@pytest.mark.timeout(30)
def test_not_ready_is_503_on_predict_and_ready_then_200_once_ready(serve: Callable[..., Api]) -> None:
    predictor = DecodingPredictor()
    predictor.ready = False
    api = serve(predictor)

    ready = requests.get(f"{api.url}/ready", timeout=5)
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "reason": "model not loaded yet"}
    predict = requests.post(f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=5)
    assert_error(predict, 503, "unavailable")
    assert predict.headers["Retry-After"] == "3"  # 2.5 s rounded up
    health = requests.get(f"{api.url}/health", timeout=5)
    assert health.status_code == 200  # liveness is not readiness

    predictor.ready = True
    ready = requests.get(f"{api.url}/ready", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert api.count("/ready", 503) == 1 and api.count("/ready", 200) == 1


@pytest.mark.timeout(30)
def test_health_reports_the_active_provider(serve: Callable[..., Api]) -> None:
    api = serve()
    response = requests.get(f"{api.url}/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "gpu": "CPUExecutionProvider"}
    assert api.count("/health", 200) == 1


@pytest.mark.timeout(30)
def test_unknown_paths_and_methods_are_json_and_counted_as_other(serve: Callable[..., Api]) -> None:
    api = serve()
    assert_error(requests.get(f"{api.url}/nope", timeout=5), 404, "not_found")
    wrong_method = requests.get(f"{api.url}/predict", timeout=5)
    assert_error(wrong_method, 405, "method_not_allowed")
    assert "POST" in wrong_method.headers["Allow"]
    assert api.count("other", 404) == 1
    assert api.count("/predict", 405) == 1


@pytest.mark.timeout(30)
def test_a_predictor_bug_is_500_and_the_server_keeps_serving(serve: Callable[..., Api]) -> None:
    class Broken(DecodingPredictor):
        def predict(self, data: bytes, *, confidence: float | None = None, timeout: float = 30.0) -> FrameResult:
            raise RuntimeError("boom")

    api = serve(Broken())
    assert_error(
        requests.post(f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=5), 500, "internal_error"
    )
    assert requests.get(f"{api.url}/health", timeout=5).status_code == 200


# ---------------------------------------------------------------------------------------------- server


@pytest.mark.timeout(30)
def test_stop_is_fast_with_idle_keepalive_connections(serve: Callable[..., Api]) -> None:
    api = serve()
    session = requests.Session()  # keeps its connection open after the answer
    assert session.get(f"{api.url}/health", timeout=5).status_code == 200
    started = time.monotonic()
    api.server.stop(timeout=5.0)
    assert time.monotonic() - started < 1.0
    assert not api.server.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{api.url}/health", timeout=2)


@pytest.mark.timeout(30)
def test_stop_lets_a_request_in_flight_finish_and_gives_up_at_the_deadline(serve: Callable[..., Api]) -> None:
    predictor = DecodingPredictor()
    predictor.gate = threading.Event()
    api = serve(predictor)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.post, f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=10)
        assert predictor.entered.acquire(timeout=5)
        threading.Timer(0.3, predictor.gate.set).start()
        started = time.monotonic()
        api.server.stop(timeout=5.0)
        assert time.monotonic() - started < 2.0
        assert pending.result().status_code == 200  # drained, not cut off

    stuck = DecodingPredictor()
    stuck.gate = threading.Event()
    api = serve(stuck)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.post, f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=10)
        assert stuck.entered.acquire(timeout=5)
        started = time.monotonic()
        api.server.stop(timeout=0.5)
        assert time.monotonic() - started < 2.5
        stuck.gate.set()  # let the abandoned worker thread finish so no thread leaks
        with pytest.raises(requests.ConnectionError):
            pending.result()


@pytest.mark.timeout(30)
def test_port_in_use_fails_in_the_constructor() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"HTTP_PORT={port} is already in use on 127.0.0.1"):
            build_http_server(DecodingPredictor(), MetricsRegistry(), Settings(http_host="127.0.0.1", http_port=port))


# ---------------------------------------------------------------------------------------------- hostile clients


@pytest.mark.timeout(60)
def test_slowloris_connections_neither_lock_out_health_nor_live_past_the_header_deadline(
    serve: Callable[..., Api],
) -> None:
    # given a client at 127.0.0.2 opening 200 connections that each trickle a header line every 0.3 s (under
    # waitress every byte renewed the idle timeout: 1,000 such connections locked /health out for 45 s)
    api = serve(http_header_timeout_seconds=1.5, http_max_connections_per_client=20)
    attackers: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = connect_from("127.0.0.2", api.server.port)
            with contextlib.suppress(OSError):  # over the per-client cap, closed at once
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            attackers.append(sock)
        started = time.monotonic()
        rounds = 0
        while time.monotonic() - started < 3.0:
            for sock in attackers:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-a: b\r\n")
            rounds += 1
            # then another client's /health is answered all along
            assert requests.get(f"{api.url}/health", timeout=2).status_code == 200
            time.sleep(0.3)
        # and every trickling connection is closed by the server: 180 over the cap at once, 20 at their deadline
        assert rounds >= 5
        assert all(closed_by_server(sock, 0.5) for sock in attackers)
        assert api.server.refused_connections >= 180
    finally:
        for sock in attackers:
            sock.close()


@pytest.mark.timeout(30)
def test_idle_keepalive_clients_over_their_cap_do_not_lock_new_clients_out(serve: Callable[..., Api]) -> None:
    # given one client holding 120 idle connections (its cap is 32; waitress let them fill its connection limit)
    api = serve()
    idle = [connect_from("127.0.0.3", api.server.port) for _ in range(120)]
    try:
        # when a new client comes, then it is answered at once
        response = requests.post(f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=5)
        assert response.status_code == 200
        assert sum(not closed_by_server(sock, 0.05) for sock in idle) == 32
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.timeout(30)
def test_no_body_is_read_for_a_request_without_a_slot(serve: Callable[..., Api]) -> None:
    # given one slot, held by a request in the pipeline
    predictor = DecodingPredictor()
    predictor.gate = threading.Event()
    api = serve(predictor, http_max_concurrency=1)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(requests.post, f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=15)
        assert predictor.entered.acquire(timeout=5)
        # when another client announces a 10 MB upload and sends only its headers (waitress read, and spooled
        # to /tmp, every body whole before the app could refuse it)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 10485760\r\n\r\n"
        status, headers, body = raw_exchange(api.server.port, head)
        # then the 503 comes on the headers alone
        assert status == 503 and b'"overloaded"' in body and headers["retry-after"] == "1"
        predictor.gate.set()
        assert held.result().status_code == 200


@pytest.mark.timeout(30)
def test_a_body_that_stalls_is_cut_at_its_deadline_and_frees_its_slot(serve: Callable[..., Api]) -> None:
    # given one slot and a client that sends half a JPEG, then nothing
    api = serve(http_max_concurrency=1, http_body_timeout_seconds=1.0)
    sock = connect_from("127.0.0.4", api.server.port)
    try:
        head = (
            f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(JPEG)}\r\n\r\n"
        ).encode()
        sock.sendall(head + JPEG[: len(JPEG) // 2])
        # then the server closes it past the body deadline, and the slot serves the next request
        assert closed_by_server(sock, 5.0)
        response = requests.post(f"{api.url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=5)
        assert response.status_code == 200, response.text
    finally:
        sock.close()


@pytest.mark.timeout(30)
def test_more_than_32_multipart_parts_is_refused_as_such(serve: Callable[..., Api]) -> None:
    # given a multipart body of 41 parts, well under HTTP_MAX_BODY_MB (it was refused as "body larger than")
    api = serve()
    fields: list[Any] = [(f"f{i}", (None, b"x")) for i in range(40)]
    fields.append(("image", ("a.jpg", JPEG, "image/jpeg")))
    response = requests.post(f"{api.url}/predict", files=fields, timeout=10)
    body = assert_error(response, 413, "too_many_parts")
    assert "more than 32 parts" in body["error"]["message"] and "HTTP_MAX_BODY_MB" not in body["error"]["message"]
    exactly_32: list[Any] = [(f"f{i}", (None, b"x")) for i in range(31)]
    exactly_32.append(("image", ("a.jpg", JPEG, "image/jpeg")))
    assert requests.post(f"{api.url}/predict", files=exactly_32, timeout=10).status_code == 200
