"""The `selfTest` direct method: a committed frame with known defects through the real model path.

The frame is `models/selftest.jpg`, its truth `models/selftest.json` (`{"classes": [...], "defects": [{"label",
"box"}]}`), both made by `tools/selftest_frame.py` from the synthetic generator the demo model was trained on.
With a model whose classes are the frame's classes (the bundled demo model) every drawn defect must be found
(same label, IoU >= 0.5); with another model the round trip itself (decode, batcher, inference, postprocess)
is what is tested.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge_inference.entities import Detection, FrameResult
from edge_inference.settings import DEFAULT_MODEL_PATH
from edge_inference.vision.model import OnnxModel

SELFTEST_FRAME = DEFAULT_MODEL_PATH.parent / "selftest.jpg"
MIN_IOU = 0.5

Predict = Callable[..., FrameResult]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def truth_of(frame: Path = SELFTEST_FRAME) -> dict[str, Any]:
    """The self-test frame's known defects and the classes they were drawn from."""
    truth: dict[str, Any] = json.loads(frame.with_suffix(".json").read_text(encoding="utf-8"))
    return truth


def judge(
    ok: bool, detections: Iterable[Detection], class_names: tuple[str, ...], truth: dict[str, Any]
) -> dict[str, Any]:
    """`passed` and how it was judged: every known defect found (same label, IoU >= MIN_IOU) when the model's
    classes are the frame's; else the round trip alone (`ok`: no error)."""
    if tuple(class_names) != tuple(truth["classes"]):
        return {"passed": ok, "check": "round trip (the model's classes are not the self-test's classes)"}
    found_boxes = list(detections)
    defects = truth["defects"]
    found = sum(
        1
        for gt in defects
        if any(d.label == gt["label"] and iou(d.box, tuple(gt["box"])) >= MIN_IOU for d in found_boxes)
    )
    return {
        "passed": ok and found == len(defects),
        "check": "known defects found",
        "expected": len(defects),
        "found": found,
    }


class SelfTest:
    """Runs the self-test frame through `predict` (the pipeline's /predict path) and judges the answer with the
    model that serves now (`model()`)."""

    def __init__(self, predict: Predict, model: Callable[[], OnnxModel], frame: Path = SELFTEST_FRAME) -> None:
        self.predict = predict
        self.model = model
        self.frame = frame

    def run(self) -> dict[str, Any]:
        data = self.frame.read_bytes()
        truth = truth_of(self.frame)
        t0 = time.monotonic()
        result = self.predict(data, timeout=30.0)
        elapsed = (time.monotonic() - t0) * 1000
        report: dict[str, Any] = {
            "provider": result.model.provider,
            "model": {"name": result.model.name, "version": result.model.version, "sha256": result.model.sha256},
            "latencyMs": round(elapsed, 1),
            "detections": [d.as_dict() for d in result.detections],
        }
        report.update(judge(result.ok, result.detections, self.model().class_names, truth))
        return report
