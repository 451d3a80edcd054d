"""What the model rollout tests share: tiny ONNX models with known detections, the whole module in-process
(`app.Module`, real pipeline, real ONNX Runtime) with a real HTTPS model server on loopback (tools/model_server.py,
the rig's test CA as MODEL_CA_FILE), the twin driven through the module's own `TwinState`, and waits.

Models (64x64 unless said): A "scratch" 0.9 at (20, 32) and "dent" 0.6 at (44, 32); B the same boxes at 96x96
with only "dent" (a different input size: frames prepared for A are refitted); SHIFTED A's boxes with the
classes swapped; FAILING A that fails every bright frame.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_inference.app import Module
from edge_inference.entities import FrameResult
from edge_inference.iot.twin import TwinState
from edge_inference.ops.telemetry import OutgoingMessage
from edge_inference.rollout.fetch import FetchPolicy
from edge_inference.settings import read_settings
from tests.onnx_models import build_constant_model, yolov8_output

NAMES = "{0: 'scratch', 1: 'dent'}"
FAST = FetchPolicy(attempts=3, backoff_s=0.2, backoff_max_s=0.5, connect_timeout_s=2, read_timeout_s=1.5)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_models(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    both = [(20, 32, 10, 10), (44, 32, 10, 10)]
    return {
        "A": build_constant_model(folder / "a.onnx", yolov8_output(both, [[0.9, 0.05], [0.05, 0.6]]), names=NAMES),
        "B": build_constant_model(
            folder / "b.onnx",
            yolov8_output([(66, 48, 15, 15)], [[0.05, 0.8]]),
            names=NAMES,
            input_hw=(96, 96),
            version="2.0.0",
        ),
        "SHIFTED": build_constant_model(
            folder / "shifted.onnx", yolov8_output(both, [[0.05, 0.9], [0.6, 0.05]]), names=NAMES, version="0.0.2"
        ),
        "FAILING": build_constant_model(
            folder / "failing.onnx",
            yolov8_output(both, [[0.9, 0.05], [0.05, 0.6]]),
            names=NAMES,
            version="6.6.6",
            fail_above=0.9,
        ),
    }


def spec(name: str, path: Path, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "url": url, "sha256": sha(path), **extra}


def drop(input_dir: Path, rel: str, seed: int = 0, *, white: bool = False, size: tuple[int, int] = (160, 120)) -> None:
    """A JPEG written beside and renamed in (random noise, or white: the failing model's poison)."""
    width, height = size
    image = (
        np.full((height, width, 3), 255, np.uint8)
        if white
        else np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    )
    target = input_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = input_dir / f".{rel.replace('/', '_')}.tmp.jpg"
    assert cv2.imwrite(str(tmp), image)
    os.replace(tmp, target)


def eventually(check: Callable[[], Any], timeout: float = 20.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(step)


@dataclass
class ListSink:
    """A telemetry sink that keeps what it is given (for the candidate shadow on its own)."""

    sent: list[OutgoingMessage] = field(default_factory=list)

    def publish(self, message: OutgoingMessage) -> None:
        self.sent.append(message)

    def close(self) -> None:
        return None


@dataclass
class Collector:
    """The telemetry stand-in of the pipeline: every finished share frame."""

    results: list[FrameResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_result(self, result: FrameResult) -> None:
        with self.lock:
            self.results.append(result)

    def group(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def snapshot(self) -> list[FrameResult]:
        with self.lock:
            return list(self.results)


class Running:
    """One module in-process, its twin, and what it reported."""

    def __init__(self, module: Module, collector: Collector, dirs: dict[str, Path]) -> None:
        self.module, self.collector, self.dirs = module, collector, dirs
        self.twin = TwinState(module.live, module.metrics, module.reported, module.rollout)
        self.reported: dict[str, Any] = {}
        self.patches: list[dict[str, Any]] = []
        self.version = 0
        self.stopped = False

    def patch(self, desired: dict[str, Any], *, full: bool = False, version: int | None = None) -> int:
        self.version = version or self.version + 1
        self.twin.apply({**desired, "$version": self.version}, full=full)
        return self.version

    def take_reported(self) -> dict[str, Any]:
        patch = self.module.reported.take()
        if patch:
            self.patches.append(patch)
            self.reported.update(patch)
        return self.reported

    def ack(self, kind: str, version: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """The final acknowledgement of `kind` (not 202) for desired `version` (default: the last patch)."""
        wanted = self.version if version is None else version

        def final() -> dict[str, Any] | None:
            ack = self.take_reported().get(kind)
            return ack if ack and ack.get("av") == wanted and ack.get("ac") != 202 else None

        ack = eventually(final, timeout)
        assert ack, f"no final {kind} ack for $version {wanted}: {self.reported.get(kind)}"
        return dict(ack)

    def results_on_share(self) -> dict[str, dict[str, Any]]:
        root = self.dirs["output"] / "results"
        return {p.relative_to(root).as_posix()[:-5]: json.loads(p.read_text()) for p in root.rglob("*.json")}

    def messages(self, output: str) -> list[dict[str, Any]]:
        path = self.dirs["output"] / "telemetry.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [m for m in map(json.loads, lines) if m["output"] == output]

    def stop(self, *, clean: bool = True) -> None:
        if not self.stopped:
            self.stopped = True
            self.module.shutdown(clean=clean)


def start_module(tmp: Path, model: Path, ca_file: Path | None, *, running: list[Running], **env: str) -> Running:
    dirs = {name: tmp / name for name in ("input", "output", "state")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    base = {
        "MODEL_PATH": str(model),
        "INPUT_DIR": str(dirs["input"]),
        "OUTPUT_DIR": str(dirs["output"]),
        "STATE_DIR": str(dirs["state"]),
        "SETTLE_SECONDS": "0.1",
        "RESCAN_INTERVAL_SECONDS": "1",
        "EXECUTION_PROVIDERS": "cpu",
        "INFERENCE_THREADS": "1",
        "BATCH_SIZE": "4",
        "HTTP_PORT": "0",
        "METRICS_PORT": "0",
        "LOCAL_TELEMETRY": "true",
        "SHUTDOWN_TIMEOUT_SECONDS": "5",
        **({"MODEL_CA_FILE": str(ca_file)} if ca_file else {}),
    }
    collector = Collector()
    module = Module(read_settings({**base, **env}), env={}, telemetry=collector, fetch_policy=FAST)
    module.start()
    run = Running(module, collector, dirs)
    running.append(run)
    return run


@contextlib.contextmanager
def modules() -> Iterator[list[Running]]:
    running: list[Running] = []
    try:
        yield running
    finally:
        for run in running:
            run.stop()
