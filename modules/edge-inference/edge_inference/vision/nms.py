"""Non-maximum suppression that keeps exactly the boxes Ultralytics' predictor keeps.

Axis-aligned boxes: Ultralytics runs torchvision's `nms` on float boxes, per class by shifting each class's boxes
by `class * 7680` pixels (float32, as it does), and keeps a box unless a kept box with a higher score overlaps it
with IoU > the threshold; the first `max_det` are kept. The same decisions come from OpenCV's C++ `NMSBoxes` when
it is called with float boxes (`Rect2d`: x, y, w, h as floats), every candidate considered (`top_k=0`: OpenCV's
`top_k` cuts the candidates *before* suppression, which changes what survives) and a fixed threshold (`eta=1`);
the cap is applied after. tests/test_nms.py checks this against a reference written in the test.

Rotated boxes (OBB): Ultralytics' "fast NMS" on probabilistic IoU (ProbIoU, arXiv 2106.06072: the Hellinger
distance between the boxes' Gaussians): boxes sorted by score, a box is dropped when any box scored higher - kept
or not - has ProbIoU >= the threshold with it. Computed in column blocks so 30,000 candidates stay in memory.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_WH = 7680.0  # Ultralytics' per-class offset (pixels) for batched NMS
MAX_CANDIDATES = 30_000  # Ultralytics' pre-NMS cap (`max_nms`)
_BLOCK_ELEMENTS = 2_000_000  # ProbIoU matrix entries computed at once
_EPS = 1e-7


def top_candidates(scores: np.ndarray, cap: int = MAX_CANDIDATES) -> np.ndarray | None:
    """Indices of the `cap` highest scores when there are more candidates than that, else None (keep all)."""
    if len(scores) <= cap:
        return None
    return np.argpartition(-scores, cap)[:cap]


def nms_boxes(
    boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, agnostic: bool
) -> np.ndarray:
    """Indices of the boxes kept, best score first (class-aware unless `agnostic`)."""
    if not len(scores):
        return np.empty(0, dtype=np.int64)
    boxes = boxes_xyxy.astype(np.float32, copy=True)
    if not agnostic:
        boxes += (class_ids.astype(np.float32) * np.float32(MAX_WH))[:, None]
    xywh = boxes.astype(np.float64)
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]  # float32 differences, as torchvision's areas
    kept = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, float(iou), eta=1.0, top_k=0)  # type: ignore[arg-type]
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def probiou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ProbIoU of every box of `a` [N, 5] with every box of `b` [M, 5] (cx, cy, w, h, angle in radians) -> [N, M]."""

    def gaussian(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        var_w, var_h = boxes[:, 2] ** 2 / 12, boxes[:, 3] ** 2 / 12  # a box as a uniform distribution's variance
        cos, sin = np.cos(boxes[:, 4]), np.sin(boxes[:, 4])
        return var_w * cos**2 + var_h * sin**2, var_w * sin**2 + var_h * cos**2, (var_w - var_h) * cos * sin

    a1, b1, c1 = (v[:, None] for v in gaussian(a))
    a2, b2, c2 = (v[None, :] for v in gaussian(b))
    dx = a[:, 0:1] - b[None, :, 0]
    dy = a[:, 1:2] - b[None, :, 1]
    sa, sb, sc = a1 + a2, b1 + b2, c1 + c2
    det = sa * sb - sc**2
    t1 = (sa * dy**2 + sb * dx**2) / (det + _EPS) * 0.25
    t2 = (sc * -dx * dy) / (det + _EPS) * 0.5
    spread = np.sqrt(np.clip(a1 * b1 - c1**2, 0, None) * np.clip(a2 * b2 - c2**2, 0, None))
    t3 = np.log(det / (4 * spread + _EPS) + _EPS) * 0.5
    bhattacharyya = np.clip(t1 + t2 + t3, _EPS, 100.0)
    hellinger = np.sqrt(1.0 - np.exp(-bhattacharyya) + _EPS)
    result: np.ndarray = 1.0 - hellinger
    return result


def nms_rotated(xywhr: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, agnostic: bool) -> np.ndarray:
    """Indices of the rotated boxes kept (fast NMS on ProbIoU), best score first."""
    if not len(scores):
        return np.empty(0, dtype=np.int64)
    boxes = xywhr.astype(np.float32, copy=True)
    if not agnostic:
        boxes[:, :2] += (class_ids.astype(np.float32) * np.float32(MAX_WH))[:, None]
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    n = len(boxes)
    keep = np.ones(n, dtype=bool)
    block = max(16, _BLOCK_ELEMENTS // n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        overlaps = probiou(boxes[:stop], boxes[start:stop])  # rows: every box up to this block; columns: the block
        earlier = np.arange(stop)[:, None] < np.arange(start, stop)[None, :]  # only boxes scored higher count
        keep[start:stop] = ~((overlaps >= iou) & earlier).any(axis=0)
    result: np.ndarray = order[keep]
    return result
