"""The `selfTest` direct method: one synthetic frame with known defects through the real model path.

With the bundled demo model (or any model whose classes are the synthetic defect classes) the detections
must match the drawn defects (IoU >= 0.5); with another model the round trip itself (decode, batcher,
inference, postprocess) is what is tested.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edge_inference.pipeline.runner import Pipeline


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run_self_test(pipeline: Pipeline) -> dict[str, Any]:
    from edge_inference import synthetic

    rng = np.random.default_rng(20261123)
    image, truth = synthetic.generate_frame(rng, 1280, 720, min_defects=2, max_defects=3)
    data = synthetic.encode_jpeg(image)
    t0 = time.monotonic()
    result = pipeline.predict(data, timeout=30.0)
    elapsed = (time.monotonic() - t0) * 1000
    report: dict[str, Any] = {
        "provider": pipeline.model.provider,
        "latencyMs": round(elapsed, 1),
        "detections": [d.as_dict() for d in result.detections],
    }
    if tuple(pipeline.model.class_names) != tuple(synthetic.CLASS_NAMES):
        report.update(passed=result.ok, check="round trip (the model's classes are not the demo classes)")
        return report
    found = 0
    for gt in truth:
        if any(d.label == gt.label and _iou(d.box, gt.box) >= 0.5 for d in result.detections):
            found += 1
    report.update(
        passed=result.ok and found == len(truth),
        check="synthetic defects found",
        expected=len(truth),
        found=found,
    )
    return report
