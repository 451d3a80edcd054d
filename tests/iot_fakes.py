"""Shared fakes for the IoT and telemetry tests: a recording ModuleControl and frame results."""

from __future__ import annotations

import threading
from typing import Any

from edge_inference.entities import Detection, FrameResult, ModelInfo
from edge_inference.ops.telemetry import OutgoingMessage

MODEL = ModelInfo(name="demo-defects", version="1", provider="CPUExecutionProvider")
# The seven variables the IoT Edge runtime gives a module (values of a made-up device).
IOT_EDGE_ENV = {
    "IOTEDGE_WORKLOADURI": "unix:///var/run/iotedge/workload.sock",
    "IOTEDGE_DEVICEID": "d",
    "IOTEDGE_MODULEID": "edge-inference",
    "IOTEDGE_MODULEGENERATIONID": "g",
    "IOTEDGE_IOTHUBHOSTNAME": "hub.azure-devices.net",
    "IOTEDGE_GATEWAYHOSTNAME": "edgehub",
    "IOTEDGE_APIVERSION": "2019-01-30",
}


def make_result(
    frame_id: str = "f" * 32,
    detections: list[tuple[str, float]] | None = None,
    *,
    rel_path: str = "line1/cam2/0001.jpg",
    error: dict[str, str] | None = None,
    processed_at: str = "2026-11-22T10:00:00.123Z",
) -> FrameResult:
    dets = tuple(
        Detection(label=label, class_id=i, confidence=conf, box=(1.0 * i, 2.0, 30.0 + i, 40.0))
        for i, (label, conf) in enumerate(detections or [])
    )
    return FrameResult(
        rel_path=rel_path,
        frame_id=frame_id,
        width=None if error else 1920,
        height=None if error else 1080,
        sha256=None if error else "ab" * 32,
        model=MODEL,
        confidence_threshold=0.5,
        iou_threshold=0.45,
        detections=dets,
        timings_ms={"total": 9.9},
        processed_at=processed_at,
        error=error,
    )


class ListSink:
    """A TelemetrySink that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []
        self.closed = False

    def publish(self, message: OutgoingMessage) -> None:
        self.messages.append(message)

    def close(self) -> None:
        self.closed = True


class FakeControl:
    """A ModuleControl that records calls; behaviour set by attributes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.paused = False
        self.known: set[str] = set()
        self.reprocess_count = 2
        self.self_test_result: dict[str, Any] = {"passed": True, "detections": 1}
        self.fail_with: Exception | None = None
        self.enqueued = threading.Event()
        self._lock = threading.Lock()

    def _record(self, name: str, arg: Any = None) -> None:
        with self._lock:
            self.calls.append((name, arg))
        if self.fail_with is not None:
            raise self.fail_with

    def status(self) -> dict[str, Any]:
        self._record("status")
        return {"paused": self.paused, "frames": 3, "provider": "CPUExecutionProvider"}

    def pause(self) -> None:
        self._record("pause")
        self.paused = True

    def resume(self) -> None:
        self._record("resume")
        self.paused = False

    def reprocess(self, pattern: str) -> int:
        self._record("reprocess", pattern)
        return self.reprocess_count

    def self_test(self) -> dict[str, Any]:
        self._record("self_test")
        return dict(self.self_test_result)

    def enqueue_path(self, rel_path: str, source: str) -> bool:
        self._record("enqueue_path", (rel_path, source))
        self.enqueued.set()
        return True

    def calls_named(self, name: str) -> list[Any]:
        with self._lock:
            return [arg for n, arg in self.calls if n == name]
