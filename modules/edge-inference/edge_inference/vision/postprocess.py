"""Decoding detector outputs: layout detection, thresholds, NMS, and boxes back to original pixels.

Layouts served (B = batch, C = classes, N = candidates, K = kept detections):
- `yolov8`  `[B, 4+C, N]`: cx, cy, w, h, then C class scores (YOLOv8/YOLO11, YOLO26/YOLOv10 one-to-many)
- `yolov5`  `[B, N, 5+C]`: cx, cy, w, h, objectness, then C class scores
- `end2end` `[B, K, 6]`: x1, y1, x2, y2, score, class (NMS in the graph: YOLOv10/YOLO26 end-to-end exports)
- `rows`    `[N, 6]`: x1, y1, x2, y2, score, class for one image (the classic Flask ONNX sample)
Everything is vectorised: thresholds and the class filter with NumPy masks, NMS in OpenCV's C++.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edge_inference.entities import Detection, Letterbox
from edge_inference.errors import ModelError

Layout = Literal["yolov8", "yolov5", "end2end", "rows"]
LAYOUTS: tuple[Layout, ...] = ("yolov8", "yolov5", "end2end", "rows")
_MAX_CANDIDATES = 30_000  # pre-NMS cap, as YOLO tooling does


def detect_layout(shape: tuple[int, ...], num_classes: int | None, end2end: bool | None = None) -> Layout:
    """Tell the output layout from a concrete output shape and what the metadata says."""
    if len(shape) == 2:
        if shape[1] == 6:
            return "rows"
        raise ModelError(f"output shape {list(shape)}: a rank-2 output must be [N, 6] rows (x1,y1,x2,y2,score,class)")
    if len(shape) != 3:
        raise ModelError(f"output shape {list(shape)}: expected rank 3 ([B, 4+C, N], [B, N, 5+C], [B, K, 6]) or [N, 6]")
    _, a, b = shape
    if end2end is True:
        if b != 6:
            raise ModelError(f"output shape {list(shape)}: an end-to-end model must output [B, K, 6]")
        return "end2end"
    if num_classes is not None:
        if a == 4 + num_classes and b != 4 + num_classes:
            return "yolov8"
        if b == 5 + num_classes:
            return "yolov5"
        if b == 6 and end2end is None:
            return "end2end"
        if a == 4 + num_classes:
            return "yolov8"
        raise ModelError(
            f"output shape {list(shape)} does not fit {num_classes} classes: expected [B, {4 + num_classes}, N] (YOLOv8),"
            f" [B, N, {5 + num_classes}] (YOLOv5) or [B, K, 6] (end-to-end)"
        )
    if b == 6 and a != 6 and end2end is not False:
        return "end2end"
    return "yolov8" if a < b else "yolov5"


def classes_in(layout: Layout, shape: tuple[int, ...]) -> int | None:
    """How many classes the output encodes (None for layouts that carry class ids)."""
    if layout == "yolov8":
        return shape[1] - 4
    if layout == "yolov5":
        return shape[2] - 5
    return None


@dataclass(frozen=True)
class DecodeOptions:
    confidence: float
    iou: float
    max_detections: int
    agnostic: bool = False
    keep_class_ids: frozenset[int] | None = None  # None: every class


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    out[:, 0] = b[:, 0] - half_w
    out[:, 1] = b[:, 1] - half_h
    out[:, 2] = b[:, 0] + half_w
    out[:, 3] = b[:, 1] + half_h
    return out


def _candidates(layout: Layout, out: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes xyxy [M,4], scores [M], class ids [M]) above the confidence threshold, for one image."""
    if layout == "yolov8":
        scores_all = out[4:, :]  # [C, N]
        class_ids = scores_all.argmax(axis=0)
        scores = scores_all[class_ids, np.arange(scores_all.shape[1])]
        keep = scores >= confidence
        return _cxcywh_to_xyxy(out[:4, keep].T), scores[keep], class_ids[keep]
    if layout == "yolov5":
        obj = out[:, 4]
        pre = obj >= confidence  # score = obj * cls <= obj: a cheap first cut
        rows = out[pre]
        cls = rows[:, 5:] * rows[:, 4:5]
        class_ids = cls.argmax(axis=1)
        scores = cls[np.arange(cls.shape[0]), class_ids]
        keep = scores >= confidence
        return _cxcywh_to_xyxy(rows[keep, :4]), scores[keep], class_ids[keep]
    # end2end / rows: x1, y1, x2, y2, score, class
    keep = out[:, 4] >= confidence
    rows = out[keep]
    return rows[:, :4].copy(), rows[:, 4], rows[:, 5].astype(np.int64)


def decode(
    layout: Layout,
    output: np.ndarray,
    letterbox: Letterbox,
    options: DecodeOptions,
    class_names: tuple[str, ...],
) -> list[Detection]:
    """Detections for one image from its slice of the output (the batch axis already indexed)."""
    out = np.asarray(output, dtype=np.float32)
    boxes, scores, class_ids = _candidates(layout, out, options.confidence)
    if options.keep_class_ids is not None and len(class_ids):
        mask = np.isin(class_ids, np.fromiter(options.keep_class_ids, dtype=np.int64))
        boxes, scores, class_ids = boxes[mask], scores[mask], class_ids[mask]
    if not len(scores):
        return []
    if len(scores) > _MAX_CANDIDATES:
        top = np.argpartition(-scores, _MAX_CANDIDATES)[:_MAX_CANDIDATES]
        boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
    if layout in ("yolov8", "yolov5"):
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        if options.agnostic:
            idx = cv2.dnn.NMSBoxes(xywh, scores, options.confidence, options.iou, top_k=options.max_detections)  # type: ignore[arg-type]
        else:
            idx = cv2.dnn.NMSBoxesBatched(
                xywh,  # type: ignore[arg-type]
                scores,  # type: ignore[arg-type]
                class_ids.astype(np.int32),  # type: ignore[arg-type]
                options.confidence,
                options.iou,
                top_k=options.max_detections,
            )
        order = np.asarray(idx, dtype=np.int64).reshape(-1)
    else:
        order = np.argsort(-scores, kind="stable")
    order = order[: options.max_detections]
    mapped = letterbox.to_original(boxes[order])
    keep_area = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
    detections: list[Detection] = []
    for (x1, y1, x2, y2), score, cid, ok in zip(
        mapped.tolist(), scores[order].tolist(), class_ids[order].tolist(), keep_area.tolist(), strict=True
    ):
        if not ok:
            continue
        label = class_names[cid] if 0 <= cid < len(class_names) else str(cid)
        detections.append(Detection(label, int(cid), float(score), (x1, y1, x2, y2)))
    return detections
