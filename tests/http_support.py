"""Shared by the HTTP tests: test images, a thinly faked `Predictor` that really decodes, a thread-leak check,
and raw connections from other loopback addresses (other clients, as the server sees them)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_inference.entities import Detection, FrameResult, ModelInfo, utc_now_iso
from edge_inference.errors import FrameError, UnavailableError
from edge_inference.settings import Settings

BOX = (40, 30, 120, 90)  # x1, y1, x2, y2 of the bright rectangle in every test image


def make_image(width: int = 160, height: int = 120) -> np.ndarray:
    image = np.full((height, width, 3), 40, np.uint8)
    x1, y1, x2, y2 = BOX
    image[y1:y2, x1:x2] = 230
    return image


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


JPEG = encode(make_image(), ".jpg")
PNG = encode(make_image(), ".png")


class DecodingPredictor:
    """A `Predictor` that decodes for real and finds the bright rectangle; switches for readiness and a gate."""

    def __init__(self) -> None:
        self.ready = True
        self.gate: threading.Event | None = None
        self.entered = threading.Semaphore(0)
        self.confidences: list[float | None] = []

    def predict(self, data: bytes, *, confidence: float | None = None, timeout: float = 30.0) -> FrameResult:
        if not self.ready:
            raise UnavailableError("model is still loading", retry_after=2.5)
        self.entered.release()
        if self.gate is not None:
            assert self.gate.wait(timeout), "test gate never opened"
        self.confidences.append(confidence)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise FrameError(FrameError.NOT_AN_IMAGE, "the bytes are not an image OpenCV can decode")
        height, width = image.shape[:2]
        ys, xs = np.nonzero(image[:, :, 1] > 128)
        detections = ()
        if len(xs):
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            detections = (Detection("bright", 0, 0.99, box),)
        return FrameResult(
            rel_path=f"http/{uuid.uuid4()}",
            frame_id=uuid.uuid4().hex,
            width=width,
            height=height,
            sha256=hashlib.sha256(data).hexdigest(),
            model=ModelInfo("test-decoder", "1", "CPUExecutionProvider"),
            confidence_threshold=0.5 if confidence is None else confidence,
            iou_threshold=0.45,
            detections=detections,
            timings_ms={"decode": 1.0, "total": 1.0},
            processed_at=utc_now_iso(),
        )

    def readiness(self) -> tuple[bool, str]:
        return (True, "ready") if self.ready else (False, "model not loaded yet")

    def active_provider(self) -> str:
        return "CPUExecutionProvider"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server the test starts next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_process_settings(root: Path, model: Path, **overrides: Any) -> Settings:
    """Settings for a whole module run in the test process: shares under `root` (made here), the CPU provider,
    the REST API and the metrics on free loopback ports, no local telemetry, no free-space alarm."""
    dirs = {name: root / name for name in ("input", "output", "state")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "model_path": model,
        "input_dir": dirs["input"],
        "output_dir": dirs["output"],
        "state_dir": dirs["state"],
        "execution_providers": ("CPUExecutionProvider",),
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "metrics_port": free_port(),
        "settle_seconds": 0.05,
        "local_telemetry": "false",
        "min_free_mb": 0,
    }
    return Settings(**{**base, **overrides})


def assert_no_new_threads(before: set[threading.Thread], grace: float = 3.0) -> None:
    """Fail when threads started since `before` are still alive after `grace` seconds."""
    deadline = time.monotonic() + grace
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    raise AssertionError(f"threads leaked: {leaked}")


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to the server from another loopback address (another client, as the server sees it)."""
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` within `within` seconds (what it may answer first is read and dropped)."""
    sock.settimeout(0.05)
    deadline = time.monotonic() + within
    while True:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            pass
        except OSError:  # reset
            return True
        if time.monotonic() >= deadline:
            return False
