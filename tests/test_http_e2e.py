"""The whole module in-process (app.Module, real ONNX Runtime on CPU, real shares in temp dirs) answering
/predict from 8 client threads while frames also arrive on the share; both paths go through one batcher.

The model is the bundled demo model when it is there, else a tiny constant-output model built here (one
`scratch` box in the centre of every frame), so the test exercises the same path either way.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from edge_inference.app import Module
from edge_inference.settings import DEFAULT_MODEL_PATH
from tests.http_support import assert_no_new_threads, in_process_settings
from tools.synthetic import encode_jpeg, generate_frame

HTTP_REQUESTS = 200
CLIENT_THREADS = 8
SHARE_FRAMES = 40
WIDTH, HEIGHT = 320, 240


def model_path(tmp_path: Path) -> tuple[Path, bool]:
    """(model, is_demo): the bundled demo model, else a constant model with one centred box."""
    if DEFAULT_MODEL_PATH.exists():
        return DEFAULT_MODEL_PATH, True
    pytest.importorskip("onnx")
    from tests.onnx_models import build_constant_model, yolov8_output

    output = yolov8_output([(32.0, 32.0, 16.0, 16.0)], [[0.9, 0.0, 0.0]])
    return build_constant_model(tmp_path / "constant.onnx", output, names="scratch,dent,spot"), False


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Module]:
    before = set(threading.enumerate())
    path, _ = model_path(tmp_path)
    settings = in_process_settings(
        tmp_path,
        path,
        http_max_concurrency=16,
        batch_size=8,
        batch_max_wait_ms=10,
        decode_workers=2,
        inference_threads=2,
        shutdown_timeout_seconds=10,
    )
    m = Module(settings, env={})
    m.start()
    try:
        yield m
    finally:
        m.request_stop()
        m.shutdown()
    assert_no_new_threads(before, grace=5.0)


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(f"{url}/ready", timeout=5).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"not ready: {requests.get(f'{url}/ready', timeout=5).text}")


@pytest.mark.timeout(240)
def test_parallel_predict_and_share_frames_are_all_answered_and_batched_together(
    module: Module, tmp_path: Path
) -> None:
    s = module.settings
    url = f"http://127.0.0.1:{module.http.port}"
    wait_ready(url)
    health = requests.get(f"{url}/health", timeout=5).json()
    assert health == {"status": "healthy", "gpu": "CPUExecutionProvider"}
    before = scrape(module.metrics_server.port)

    rng = np.random.default_rng(7)
    bodies = [encode_jpeg(generate_frame(rng, WIDTH, HEIGHT)[0]) for _ in range(24)]
    share_frames = [encode_jpeg(generate_frame(rng, WIDTH, HEIGHT)[0]) for _ in range(SHARE_FRAMES)]
    staging = tmp_path / "staging"
    staging.mkdir()

    def drop_frames() -> None:
        # frames arrive on the share while the HTTP load runs (written beside, renamed in: complete files)
        for i, data in enumerate(share_frames):
            tmp = staging / f"f{i:03d}.jpg"
            tmp.write_bytes(data)
            os.rename(tmp, s.input_dir / "line1" / f"f{i:03d}.jpg")
            time.sleep(0.01)

    (s.input_dir / "line1").mkdir()

    def post(i: int) -> tuple[int, bytes, int, dict[str, Any]]:
        """Half multipart, half raw; returns plain values (a kept Response would keep its connection open)."""
        data = bodies[i % len(bodies)]
        if i % 2:
            response = requests.post(f"{url}/predict", files={"image": (f"{i}.jpg", data)}, timeout=60)
        else:
            response = requests.post(f"{url}/predict", data=data, headers={"Content-Type": "image/jpeg"}, timeout=60)
        with response:
            return i, data, response.status_code, response.json()

    dropper = threading.Thread(target=drop_frames, name="test-frame-dropper")
    started = time.monotonic()
    dropper.start()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        answers = list(pool.map(post, range(HTTP_REQUESTS)))
    elapsed = time.monotonic() - started
    dropper.join()

    # every request answered with its own frame's result
    for i, data, status, result in answers:
        assert status == 200, (i, result)
        assert result["schemaVersion"] == "1.1"
        assert result["frame"]["sha256"] == hashlib.sha256(data).hexdigest(), i
        assert (result["frame"]["width"], result["frame"]["height"]) == (WIDTH, HEIGHT)
        assert result["frame"]["path"].startswith("http/")
        assert result["model"]["provider"] == "CPUExecutionProvider"
        assert "error" not in result
        for det in result["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= WIDTH and 0 <= y1 <= y2 <= HEIGHT
    assert len({result["frame"]["path"] for _, _, _, result in answers}) == HTTP_REQUESTS

    # every share frame gets its result file
    results = s.output_dir / "results" / "line1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(results.glob("*.json"))) < SHARE_FRAMES:
        time.sleep(0.1)
    assert len(list(results.glob("*.json"))) == SHARE_FRAMES

    after = scrape(module.metrics_server.port)
    key = ("edge_inference_http_requests_total", (("endpoint", "/predict"), ("status", "200")))
    assert after[key] - before.get(key, 0) == HTTP_REQUESTS
    ok = ("edge_inference_frames_total", (("outcome", "ok"),))
    assert after[ok] - before[ok] == SHARE_FRAMES
    batches = after[("edge_inference_batch_size_count", ())]
    frames_batched = after[("edge_inference_batch_size_sum", ())]
    single = after[("edge_inference_batch_size_bucket", (("le", "1.0"),))]
    assert frames_batched == HTTP_REQUESTS + SHARE_FRAMES
    assert single < batches, "no batch ever held more than one frame"
    print(
        f"\n{HTTP_REQUESTS} /predict + {SHARE_FRAMES} share frames in {elapsed:.1f} s: "
        f"{batches:.0f} batches, {frames_batched / batches:.2f} frames/batch, {batches - single:.0f} with >1"
    )
