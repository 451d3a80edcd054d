"""The locked-down HTTP of the whole module in-process (real model, shares, servers): HTTP_API_KEY on /predict,
the live page and its data; METRICS_API_KEY on /metrics; /health and /ready open; HTTPS with HTTP_TLS_CERT /
HTTP_TLS_KEY.

For every protected endpoint: no key, a wrong key (Bearer and Basic) and a malformed header get 401 with a JSON
body and the Bearer and Basic challenges; the right key (Bearer, or Basic with any user name) passes. Neither key
ever appears in a log line or a body.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edge_inference.app import Module
from edge_inference.errors import SettingsError
from edge_inference.settings import read_settings
from tests.http_support import JPEG, in_process_settings
from tests.test_http_e2e import model_path, running_module, wait_ready
from tools.edgehub_rig.ca import create_test_pki

KEY = "the-http-api-key-0123456789"
METRICS_KEY = "the-metrics-key-9876543210"
WRONG = "a-wrong-key-but-long-enough"

# (method, path) of every endpoint the key guards; frame 1 exists once the test has dropped a frame
PROTECTED = [
    ("POST", "/predict"),
    ("GET", "/"),
    ("GET", "/page/page.js"),
    ("GET", "/page/page.css"),
    ("GET", "/api/status"),
    ("GET", "/api/frames"),
    ("GET", "/api/frames/1"),
    ("GET", "/api/frames/1/thumb.jpg"),
    ("GET", "/api/frames/1/full.jpg"),
]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Module]:
    path, _ = model_path(tmp_path)
    settings = in_process_settings(
        tmp_path, path, http_api_key=KEY, metrics_api_key=METRICS_KEY, decode_workers=1, inference_threads=2
    )
    with running_module(settings) as m:
        yield m


def call(url: str, method: str, path: str, authorization: str | None) -> requests.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    if method == "POST":
        headers["Content-Type"] = "image/jpeg"
        return requests.post(url + path, data=JPEG, headers=headers, timeout=30)
    return requests.get(url + path, headers=headers, timeout=30)


def wait_for_frame(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames = requests.get(f"{url}/api/frames", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
        if frames["frames"]:
            return
        time.sleep(0.1)
    raise AssertionError("the dropped frame never reached the page's ring")


@pytest.mark.timeout(180)
def test_every_protected_endpoint_wants_the_key_and_no_key_is_ever_shown(
    module: Module, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert module.http is not None and module.metrics_server is not None
    url = f"http://127.0.0.1:{module.http.port}"
    wait_ready(url)
    (module.settings.input_dir / "one.jpg").write_bytes(JPEG)
    wait_for_frame(url)

    bodies: list[str] = []
    refusals = [None, f"Bearer {WRONG}", basic("operator", WRONG), "Bearer", "Basic !!!not-base64", f"Token {KEY}"]
    for method, path in PROTECTED:
        for authorization in refusals:
            response = call(url, method, path, authorization)
            bodies.append(response.text)
            assert response.status_code == 401, (method, path, authorization)
            assert response.headers["Content-Type"] == "application/json"
            assert response.json()["error"]["code"] == "unauthorized"
            challenges = response.raw.headers.getlist("WWW-Authenticate")
            assert challenges == ['Bearer realm="edge-inference"', 'Basic realm="edge-inference", charset="UTF-8"']
        for authorization in (f"Bearer {KEY}", basic("anyone", KEY), basic("", KEY)):
            response = call(url, method, path, authorization)
            bodies.append(response.text if "json" in response.headers.get("Content-Type", "") else "")
            assert response.status_code == 200, (method, path, authorization, response.text[:200])

    # /health and /ready stay open for the container's health check; unknown paths say 404 without a key
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    assert requests.get(f"{url}/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/nothing-here", timeout=5).status_code == 404

    # the metrics have a key of their own
    metrics = f"http://127.0.0.1:{module.metrics_server.port}/metrics"
    for authorization in (None, f"Bearer {KEY}", basic("x", WRONG)):
        response = requests.get(metrics, headers={"Authorization": authorization} if authorization else {}, timeout=5)
        bodies.append(response.text)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    scrape = requests.get(metrics, headers={"Authorization": f"Bearer {METRICS_KEY}"}, timeout=5)
    assert scrape.status_code == 200 and "edge_inference_frames_total" in scrape.text
    assert requests.get(metrics, headers={"Authorization": basic("prom", METRICS_KEY)}, timeout=5).status_code == 200

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "401 unauthorized" in logged  # refusals are logged, without what was sent
    for secret in (KEY, METRICS_KEY, WRONG):
        assert secret not in logged
        assert all(secret not in body for body in bodies)
    assert KEY not in repr(module.settings) and METRICS_KEY not in repr(module.settings)


@pytest.mark.timeout(180)
def test_https_with_the_tls_settings(tmp_path: Path) -> None:
    pki = create_test_pki(tmp_path / "pki")
    path, _ = model_path(tmp_path)
    settings = in_process_settings(
        tmp_path, path, http_api_key=KEY, http_tls_cert=pki.server_cert, http_tls_key=pki.server_key
    )
    with running_module(settings) as module:
        assert module.http is not None
        url = f"https://127.0.0.1:{module.http.port}"
        assert requests.get(f"{url}/health", verify=str(pki.ca_cert), timeout=10).status_code == 200
        page = requests.get(f"{url}/", headers={"Authorization": f"Bearer {KEY}"}, verify=str(pki.ca_cert), timeout=10)
        assert page.status_code == 200 and "edge-inference" in page.text
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{module.http.port}/health", timeout=5)  # no plain HTTP on that port


def test_bad_keys_and_half_tls_settings_are_refused_without_showing_the_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    with pytest.raises(SettingsError) as caught:
        read_settings(
            {"HTTP_API_KEY": "short-key", "METRICS_API_KEY": "has a space inside it", "HTTP_TLS_CERT": str(cert)}
        )
    problems = " ".join(caught.value.problems)
    assert "HTTP_API_KEY=<redacted> is invalid: expected at least 16 printable ASCII characters" in problems
    assert "METRICS_API_KEY=<redacted>" in problems
    assert "HTTP_TLS_CERT and HTTP_TLS_KEY go together" in problems
    assert "short-key" not in problems and "space inside" not in problems


def test_tls_files_that_cannot_be_used_stop_the_start_with_one_sentence(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    path, _ = model_path(tmp_path)
    settings = in_process_settings(tmp_path, path, http_tls_cert=cert, http_tls_key=key)
    with pytest.raises(SettingsError, match=r"HTTP_TLS_CERT / HTTP_TLS_KEY .* cannot be used"):
        Module(settings, env={})
