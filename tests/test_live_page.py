"""The live operator page in a real headless browser (Debian's Chromium driven by Playwright) against the whole
module in-process (real ONNX Runtime on the CPU, real shares in temp dirs, HTTP_API_KEY set).

Given the module and a browser, when the page is opened without the key it is refused (401, nothing of the page);
with the key it loads; a frame dropped on the share appears within seconds with its boxes drawn; a corrupt one
shows as failed and the `failed` filter keeps only it; an alarm raised shows; a click opens the frame and its
result. The test saves the screenshot that the README shows (docs/images/live-page.png).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_inference.app import Module
from edge_inference.ops.alarms import GPU_OVER_TEMPERATURE
from tests.http_support import in_process_settings
from tests.test_http_e2e import model_path, running_module, wait_ready
from tools.browser import BrowserMissing, launch_chromium
from tools.synthetic import encode_jpeg, generate_frame

KEY = "page-test-key-0123456789abcdef"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "live-page.png"
APPEARS_WITHIN_S = 8.0


def drop(folder: Path, name: str, data: bytes) -> None:
    """Write a frame as a camera does: a temp name, then a rename into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    tmp.rename(folder / name)


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Module]:
    path, _ = model_path(tmp_path)
    settings = in_process_settings(
        tmp_path, path, http_api_key=KEY, decode_workers=2, inference_threads=2, shutdown_timeout_seconds=10
    )
    with running_module(settings) as m:
        yield m


@pytest.mark.timeout(240)
def test_the_page_needs_the_key_shows_frames_with_boxes_failures_and_alarms(module: Module) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    assert module.http is not None
    url = f"http://127.0.0.1:{module.http.port}"
    wait_ready(url)
    rng = np.random.default_rng(15)
    with sync_api.sync_playwright() as playwright:
        try:
            browser = launch_chromium(playwright)
        except BrowserMissing as exc:
            pytest.fail(str(exc))
        try:
            # without the key: the browser is asked for it (401 with the Basic challenge) and shows nothing
            anonymous = browser.new_context()
            page = anonymous.new_page()
            with pytest.raises(sync_api.Error, match="INVALID_AUTH_CREDENTIALS"):
                page.goto(url + "/")
            refused = anonymous.request.get(url + "/")
            assert refused.status == 401
            challenges = [h["value"] for h in refused.headers_array if h["name"].lower() == "www-authenticate"]
            assert 'Basic realm="edge-inference", charset="UTF-8"' in challenges
            assert refused.json()["error"]["code"] == "unauthorized"
            anonymous.close()
            # a wrong key: 401, and the body says so without a word of either key
            wrong = browser.new_context(http_credentials={"username": "operator", "password": "not-the-key-at-all"})
            response = wrong.new_page().goto(url + "/")
            assert response is not None and response.status == 401
            assert "not the HTTP_API_KEY" in response.text()
            assert KEY not in response.text() and "not-the-key-at-all" not in response.text()
            wrong.close()

            context = browser.new_context(
                http_credentials={"username": "operator", "password": KEY}, viewport={"width": 1440, "height": 1000}
            )
            page = context.new_page()
            response = page.goto(url + "/")
            assert response is not None and response.status == 200
            expect(page.locator("#state")).to_have_text("running", timeout=15_000)

            # given a frame with defects dropped on the share, when the page polls, then it shows it with boxes
            inbox = module.settings.input_dir / "line1" / "cam2"
            frame, defects = generate_frame(rng, 960, 540, min_defects=2)
            dropped = time.monotonic()
            drop(inbox, "0001.jpg", encode_jpeg(frame))
            card = page.wait_for_selector(
                '.frame:not([data-count="0"]) canvas:not([data-drawn=""]):not([data-drawn="0"])',
                timeout=APPEARS_WITHIN_S * 1000 + 5000,
            )
            appeared_s = time.monotonic() - dropped
            assert card is not None
            assert appeared_s < APPEARS_WITHIN_S, f"the frame took {appeared_s:.1f} s to appear"
            result = module.pipeline.recent.frames()[0]
            assert int(card.get_attribute("data-drawn") or 0) == result["count"] > 0
            assert "line1/cam2/0001.jpg" in page.inner_text("#frames")

            # more frames, one of them corrupt: it shows as failed, and the `failed` filter keeps only it
            for i in range(2, 5):
                drop(inbox, f"{i:04d}.jpg", encode_jpeg(generate_frame(rng, 960, 540, min_defects=1)[0]))
            hostile = "<img src=x onerror=document.title='owned'>.jpg"  # a file name is shown as text, never as HTML
            drop(inbox, hostile, encode_jpeg(generate_frame(rng, 960, 540, min_defects=1)[0]))
            drop(inbox, "0006.jpg", b"GIF89a? no: these bytes are no image at all")
            drop(module.settings.input_dir / "line2", "0001.jpg", encode_jpeg(generate_frame(rng, 640, 360)[0]))
            expect(page.locator("#frames .frame")).to_have_count(7, timeout=30_000)
            page.select_option("#profile", "line2")  # the folder filter (a camera profile's name when one judged it)
            expect(page.locator("#frames .frame")).to_have_count(1)
            assert "line2/0001.jpg" in page.inner_text("#frames")
            page.select_option("#profile", "")
            page.wait_for_selector(".frame.failed", timeout=10_000)
            page.check('input[name="only"][value="failed"]')
            expect(page.locator("#frames .frame")).to_have_count(1)
            assert "0006.jpg" in page.inner_text("#frames")
            assert page.locator("#frames img").count() == 0 and page.title() == "edge-inference: live"
            page.check('input[name="only"][value=""]')
            expect(page.locator("#frames .frame")).to_have_count(7)
            assert hostile.removesuffix(".jpg") in page.inner_text("#frames")

            # an alarm raised shows within a status poll
            module.alarms.raise_alarm(GPU_OVER_TEMPERATURE, {"celsius": 91}, "GPU at 91 C (limit 85 C)")
            page.wait_for_selector(f'.alarm[data-alarm="{GPU_OVER_TEMPERATURE}"]', timeout=10_000)
            assert "GPU at 91 C" in page.inner_text("#alarms")
            expect(page.locator('.frame canvas[data-drawn=""]')).to_have_count(0, timeout=10_000)
            page.wait_for_timeout(2500)  # one more status poll: the figures of the frames above
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))

            # a click opens the frame: its picture with the result drawn, and its result JSON
            page.click('.frame[data-id="1"]')
            page.wait_for_selector("#viewer[open] #viewer-canvas:not([data-drawn=''])", timeout=10_000)
            assert '"path": "line1/cam2/0001.jpg"' in page.inner_text("#viewer-json")
            assert page.get_attribute("#viewer-canvas", "data-drawn") == str(result["count"])
            context.close()
        finally:
            browser.close()
    assert len(defects) >= 2


def test_chromium_is_in_the_makefile_apt_packages() -> None:
    """CI installs the browser this test drives (`make apt-deps`)."""
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert "chromium:chromium" in makefile
