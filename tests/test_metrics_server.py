"""`GET /metrics` over real HTTP, parsed with the client library's own parser, as a Prometheus scrape would be."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from edge_inference.control.http_api import build_http_server
from edge_inference.control.http_server import ConnectionLimits
from edge_inference.control.metrics_server import MetricsServer
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.settings import Settings
from tests.http_support import JPEG, DecodingPredictor, assert_no_new_threads, closed_by_server, connect_from


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert_no_new_threads(before)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.timeout(30)
def test_metrics_are_served_on_an_ephemeral_port_and_counters_move() -> None:
    # given a module registry served on port 0
    metrics = MetricsRegistry()
    with MetricsServer(metrics.registry, 0, "127.0.0.1") as server:
        assert server.port > 0
        first = scrape(server.port)
        # then the module's families are there, at zero, with the process collectors beside them
        assert first[("edge_inference_frames_total", (("outcome", "ok"),))] == 0
        assert ("process_cpu_seconds_total", ()) in first
        # when frames are counted
        metrics.frames.labels(outcome="ok").inc(3)
        metrics.batch_size.observe(4)
        second = scrape(server.port)
    # then the next scrape shows them
    assert second[("edge_inference_frames_total", (("outcome", "ok"),))] == 3
    assert second[("edge_inference_batch_size_count", ())] == 1
    assert second[("edge_inference_batch_size_bucket", (("le", "2.0"),))] == 0
    assert second[("edge_inference_batch_size_bucket", (("le", "4.0"),))] == 1


@pytest.mark.timeout(30)
def test_rest_api_requests_show_up_in_the_scrape() -> None:
    # given the REST API and the metrics server on one registry
    metrics = MetricsRegistry()
    settings = Settings(http_host="127.0.0.1", http_port=0)
    api = build_http_server(DecodingPredictor(), metrics, settings)
    api.start()
    try:
        with MetricsServer(metrics.registry, 0, "127.0.0.1") as server:
            url = f"http://127.0.0.1:{api.port}"
            # when a few requests are made
            for _ in range(2):
                assert requests.get(f"{url}/health", timeout=5).status_code == 200
            assert requests.post(f"{url}/predict", files={"image": ("a.jpg", JPEG)}, timeout=5).status_code == 200
            assert (
                requests.post(
                    f"{url}/predict", data=b"x", headers={"Content-Type": "text/plain"}, timeout=5
                ).status_code
                == 415
            )
            samples = scrape(server.port)
    finally:
        api.stop()
    # then they are counted by endpoint and status, with latency
    requests_total = "edge_inference_http_requests_total"
    assert samples[(requests_total, (("endpoint", "/health"), ("status", "200")))] == 2
    assert samples[(requests_total, (("endpoint", "/predict"), ("status", "200")))] == 1
    assert samples[(requests_total, (("endpoint", "/predict"), ("status", "415")))] == 1
    assert samples[("edge_inference_http_request_seconds_count", (("endpoint", "/predict"),))] == 2
    assert samples[("edge_inference_http_predict_in_flight", ())] == 0


@pytest.mark.timeout(30)
def test_two_modules_in_one_process_do_not_share_series() -> None:
    a, b = MetricsRegistry(), MetricsRegistry()
    a.frames.labels(outcome="failed").inc()
    with MetricsServer(a.registry, 0, "127.0.0.1") as sa, MetricsServer(b.registry, 0, "127.0.0.1") as sb:
        assert sa.port != sb.port
        assert scrape(sa.port)[("edge_inference_frames_total", (("outcome", "failed"),))] == 1
        assert scrape(sb.port)[("edge_inference_frames_total", (("outcome", "failed"),))] == 0


@pytest.mark.timeout(30)
def test_stop_frees_the_port_promptly() -> None:
    server = MetricsServer(MetricsRegistry().registry, 0, "127.0.0.1")
    server.start()
    port = server.port
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.5
    assert not server.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


@pytest.mark.timeout(30)
def test_idle_and_trickling_scrapers_hold_no_thread_and_are_cut_at_the_header_deadline() -> None:
    # given a metrics server (the client library's own server started one thread per connection, with no
    # timeout: 300 threads held after 40 s of idle connections)
    metrics = MetricsRegistry()
    with MetricsServer(metrics.registry, 0, "127.0.0.1", ConnectionLimits(header_timeout=1.0, per_client=20)) as server:
        threads = threading.active_count()
        # when one address opens 100 connections and trickles half a request head on each
        socks = [connect_from("127.0.0.2", server.port) for _ in range(100)]
        try:
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            # then no thread is started for them, and a scrape from elsewhere is answered
            assert threading.active_count() <= threads + 2
            assert ("edge_inference_frames_total", (("outcome", "ok"),)) in scrape(server.port)
            # and all are closed: 80 over the cap at once, the other 20 at the header deadline
            assert all(closed_by_server(sock, 3.0) for sock in socks)
        finally:
            for sock in socks:
                sock.close()
