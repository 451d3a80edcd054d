"""NMS keeps exactly the boxes Ultralytics' predictor keeps: torchvision's batched NMS on float boxes for
axis-aligned boxes, fast NMS on ProbIoU for rotated ones. The references are written here, in NumPy, as those
libraries define them; the crowded low-score cases are where OpenCV called with `top_k` (or on integer boxes)
decides differently."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_inference.entities import Letterbox
from edge_inference.vision.heads import Head
from edge_inference.vision.nms import MAX_WH, nms_boxes, nms_rotated, probiou
from edge_inference.vision.postprocess import DecodeOptions, Decoder

pytestmark = pytest.mark.timeout(60)


def reference_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    """torchvision.ops.nms as Ultralytics calls it: boxes offset by class * 7680 (float32), sorted by score, a box
    suppressed when its IoU with a kept box is over the threshold; areas and IoU in float32."""
    shifted = boxes.astype(np.float32) + (classes.astype(np.float32) * np.float32(MAX_WH))[:, None]
    x1, y1, x2, y2 = shifted.T
    areas = (x2 - x1) * (y2 - y1)
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        for j in order[pos + 1 :]:
            if suppressed[j]:
                continue
            w = max(np.float32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
            h = max(np.float32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = np.float32(w * h)
            if inter / (areas[i] + areas[j] - inter) > iou:
                suppressed[j] = True
    return keep


def crowd(n: int, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n small, heavily overlapping boxes with low, close scores (the frames of issue 19)."""
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(200, 260, n), rng.uniform(150, 210, n)
    w, h = rng.uniform(4, 40, n), rng.uniform(4, 40, n)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return boxes, rng.uniform(0.25, 0.32, n).astype(np.float32), rng.integers(0, classes, n)


@pytest.mark.parametrize(("seed", "iou"), [(1, 0.45), (2, 0.7), (3, 0.5)])
def test_crowded_low_score_boxes_keep_exactly_what_torchvision_keeps(seed: int, iou: float) -> None:
    boxes, scores, classes = crowd(600, seed)
    expected = reference_nms(boxes, scores, classes, iou)
    assert 0 < len(expected) < 600  # the crowd really suppresses
    assert nms_boxes(boxes, scores, classes, iou, agnostic=False).tolist() == expected
    agnostic = reference_nms(boxes, scores, np.zeros_like(classes), iou)
    assert nms_boxes(boxes, scores, classes, iou, agnostic=True).tolist() == agnostic


def test_the_detection_cap_applies_after_suppression_not_before() -> None:
    # given more candidates than max_detections, crowded so that suppression matters
    boxes, scores, classes = crowd(2000, 4)
    expected = reference_nms(boxes, scores, classes, 0.45)
    cap = 100
    assert len(expected) > cap
    # OpenCV's own top_k cuts the candidates before suppressing: boxes that Ultralytics keeps are lost, others
    # that a lost box would have suppressed come back - the decisions differ
    xywh = boxes.astype(np.float64)
    xywh[:, 2:] -= xywh[:, :2]
    cv_top_k = np.asarray(cv2.dnn.NMSBoxesBatched(xywh, scores, classes.astype(np.int32), 0.0, 0.45, top_k=cap))
    assert cv_top_k.reshape(-1).tolist() != expected[:cap]
    # the decoder keeps Ultralytics' first `max_det` of the suppressed list
    out = np.zeros((4 + 3, len(scores)), np.float32)
    out[0], out[1] = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    out[2], out[3] = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    out[4 + classes, np.arange(len(scores))] = scores
    decoder = Decoder(Head("detect", "yolov8", 3), ("a", "b", "c"), (640, 640))
    one_to_one = Letterbox(1.0, 0.0, 0.0, 640, 640)
    got = decoder.decode([out], one_to_one, DecodeOptions(0.2, 0.45, cap)).detections
    want = [(float(scores[i]), int(classes[i])) for i in expected[:cap]]
    assert [(d.confidence, d.class_id) for d in got] == want


def test_integer_boxes_would_keep_more_so_boxes_stay_float() -> None:
    # two thin overlapping boxes: float IoU 38/78 = 0.487 (over 0.45: the second is suppressed); as integer
    # rectangles (x, y, w, h truncated, as OpenCV's int `Rect` overload takes them) IoU 20/60 = 0.33: both kept
    boxes = np.array([[10.0, 10.0, 12.9, 30.0], [11.0, 10.0, 13.9, 30.0]], np.float32)
    scores, classes = np.array([0.9, 0.8], np.float32), np.zeros(2, np.int64)
    assert reference_nms(boxes, scores, classes, 0.45) == [0]
    assert nms_boxes(boxes, scores, classes, 0.45, agnostic=False).tolist() == [0]
    kept_as_ints = cv2.dnn.NMSBoxes([(10, 10, 2, 20), (11, 10, 2, 20)], [0.9, 0.8], 0.0, 0.45)
    assert np.asarray(kept_as_ints).reshape(-1).tolist() == [0, 1]


def test_probiou_of_identical_disjoint_and_rotated_boxes() -> None:
    a = np.array([[50.0, 50.0, 40.0, 20.0, 0.0]], np.float32)
    same = probiou(a, a)[0, 0]
    assert same == pytest.approx(1.0, abs=1e-3)
    far = probiou(a, np.array([[500.0, 500.0, 40.0, 20.0, 0.0]], np.float32))[0, 0]
    assert far == pytest.approx(0.0, abs=1e-6)
    # a box turned by 90 degrees is the same box with width and height swapped
    turned = np.array([[50.0, 50.0, 20.0, 40.0, np.pi / 2]], np.float32)
    assert probiou(a, turned)[0, 0] == pytest.approx(1.0, abs=1e-3)
    # symmetric, and lower for a box turned by 45 degrees than for the box itself
    other = np.array([[52.0, 49.0, 40.0, 20.0, np.pi / 4]], np.float32)
    assert probiou(a, other)[0, 0] == pytest.approx(probiou(other, a)[0, 0], abs=1e-6)
    assert probiou(a, other)[0, 0] < same


def test_rotated_nms_is_fast_nms_a_box_suppressed_by_a_suppressed_box_goes_too() -> None:
    # A overlaps B, B overlaps C, A does not overlap C; scores A > B > C: fast NMS drops B (by A) and C (by B,
    # although B was dropped), as Ultralytics' rotated NMS does; a greedy NMS would have kept C
    boxes = np.array([[100, 100, 40, 20, 0.0], [112, 100, 40, 20, 0.0], [124, 100, 40, 20, 0.0]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    ious = probiou(boxes, boxes)
    assert ious[0, 1] >= 0.5 and ious[1, 2] >= 0.5 and ious[0, 2] < 0.5
    assert nms_rotated(boxes, scores, np.zeros(3, np.int64), 0.5, agnostic=False).tolist() == [0]
    # other classes never suppress each other, unless agnostic
    classes = np.array([0, 1, 2])
    assert nms_rotated(boxes, scores, classes, 0.5, agnostic=False).tolist() == [0, 1, 2]
    assert nms_rotated(boxes, scores, classes, 0.5, agnostic=True).tolist() == [0]


def test_rotated_nms_in_blocks_matches_the_whole_matrix() -> None:
    rng = np.random.default_rng(7)
    n = 3000  # more than one block of the ProbIoU matrix
    boxes = np.stack(
        [
            rng.uniform(0, 400, n),
            rng.uniform(0, 400, n),
            rng.uniform(5, 40, n),
            rng.uniform(5, 40, n),
            rng.uniform(0, 3, n),
        ],
        axis=1,
    ).astype(np.float32)
    scores = rng.uniform(0.3, 0.9, n).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    full = np.triu(probiou(boxes[order], boxes[order]), k=1)
    expected = order[~(full >= 0.45).any(axis=0)]
    assert nms_rotated(boxes, scores, np.zeros(n, np.int64), 0.45, agnostic=True).tolist() == expected.tolist()
