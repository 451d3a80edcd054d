"""Drawing a frame's result on it for annotated/: boxes and labels, masks (translucent), rotated boxes, keypoints,
or a classifier's top classes.

Everything in a result is in original pixels; the image may be the reduced decode (JPEG_REDUCED_DECODE), so the
geometry is scaled by `scale` (image pixels per original pixel). The mask PNG is not drawn here: it is the
full-resolution label map of vision/masks.py.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_inference.entities import Classification, Detection

PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72)]
MASK_ALPHA = 0.4
KEYPOINT_MIN_CONFIDENCE = 0.5  # keypoints the model thinks hidden are not drawn (as Ultralytics draws them)


def _colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


def _label(canvas: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], thickness: int) -> None:
    scale = thickness / 3
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    top = max(y - th - 4, 0)
    cv2.rectangle(canvas, (x, top), (x + tw + 2, top + th + 4), colour, -1)
    cv2.putText(canvas, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)


def _overlay_mask(canvas: np.ndarray, det: Detection, scale: float) -> None:
    mask = det.mask
    if mask is None or mask.bitmap is None or not mask.bitmap.size:
        return
    x0, y0 = round(mask.origin[0] * scale), round(mask.origin[1] * scale)
    h, w = mask.bitmap.shape
    bitmap = mask.bitmap
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        bitmap = cv2.resize(bitmap, size, interpolation=cv2.INTER_NEAREST)
    region = canvas[y0 : y0 + bitmap.shape[0], x0 : x0 + bitmap.shape[1]]
    inside = bitmap[: region.shape[0], : region.shape[1]] > 0
    colour = np.array(_colour(det.class_id), dtype=np.float32)
    region[inside] = (region[inside] * (1 - MASK_ALPHA) + colour * MASK_ALPHA).astype(np.uint8)


def _keypoints(canvas: np.ndarray, det: Detection, scale: float, radius: int) -> None:
    for point in det.keypoints or ():
        if len(point) > 2 and point[2] < KEYPOINT_MIN_CONFIDENCE:
            continue
        centre = (round(point[0] * scale), round(point[1] * scale))
        cv2.circle(canvas, centre, radius, _colour(det.class_id), -1, cv2.LINE_AA)


def draw(
    image: np.ndarray,
    detections: tuple[Detection, ...],
    classification: Classification | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """A copy of `image` with the result drawn on it."""
    canvas = image.copy()
    thickness = max(1, round(sum(canvas.shape[:2]) / 600))
    for det in reversed(detections):  # the best on top
        _overlay_mask(canvas, det, scale)
    for det in detections:
        colour = _colour(det.class_id)
        if det.obb is not None:
            corners = np.array([(x * scale, y * scale) for x, y in det.obb.corners()], dtype=np.float32)
            cv2.polylines(canvas, [np.round(corners).astype(np.int32)], True, colour, thickness, cv2.LINE_AA)
            anchor = min(det.obb.corners(), key=lambda p: p[1])
            x, y = round(anchor[0] * scale), round(anchor[1] * scale)
        else:
            x1, y1, x2, y2 = (round(v * scale) for v in det.box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
            x, y = x1, y1
        _keypoints(canvas, det, scale, radius=thickness + 2)
        _label(canvas, f"{det.label} {det.confidence:.2f}", x, y, colour, thickness)
    if classification is not None:
        line = max(14, 12 * thickness)
        for i, entry in enumerate(classification.top5):
            text = f"{entry.label} {entry.confidence:.2f}"
            _label(canvas, text, 4, line * (i + 1) + 4, _colour(entry.class_id), thickness)
    return canvas
