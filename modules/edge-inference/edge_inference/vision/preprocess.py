"""Letterbox resize into the model input, and the tensor layout change, as Ultralytics-trained models expect.

Keep the aspect ratio, resize with `cv2.INTER_LINEAR`, pad with 114 grey, the odd padding pixel at the
bottom/right; other kernels or paddings shift the detections of models trained this way. The geometry
(`Letterbox`) travels with the frame so boxes map back to the original pixels exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_inference.entities import Letterbox

PAD_VALUE = 114


def letterbox(image: np.ndarray, new_hw: tuple[int, int], pad_value: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """Resize + pad a BGR image into `new_hw` (height, width); returns the padded image and its geometry."""
    h, w = image.shape[:2]
    new_h, new_w = new_hw
    r = min(new_h / h, new_w / w)
    # At least one pixel each way: a 2048x1 strip would otherwise round to 0 rows, which cv2.resize refuses.
    unpad_w, unpad_h = max(1, round(w * r)), max(1, round(h * r))
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    if (unpad_w, unpad_h) != (w, h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return image, Letterbox(scale=r, pad_x=float(left), pad_y=float(top), width=w, height=h)


def to_tensor(padded_bgr: np.ndarray, dtype: type[np.floating] | np.dtype = np.float32) -> np.ndarray:
    """BGR HWC uint8 -> RGB CHW in 0..1 (one fused OpenCV pass), with a leading batch axis of 1."""
    blob = cv2.dnn.blobFromImage(padded_bgr, scalefactor=1.0 / 255.0, swapRB=True)
    return blob if blob.dtype == dtype else blob.astype(dtype)


def prepare_frame(
    image: np.ndarray,
    original_wh: tuple[int, int],
    new_hw: tuple[int, int],
    dtype: type[np.floating] | np.dtype = np.float32,
) -> tuple[np.ndarray, Letterbox]:
    """Like `prepare`, for an image decoded at reduced size: the geometry maps to the original frame."""
    tensor, box = prepare(image, new_hw, dtype)
    width, height = original_wh
    if (box.width, box.height) == (width, height):
        return tensor, box
    reduced_per_original = box.width / width
    return tensor, Letterbox(box.scale * reduced_per_original, box.pad_x, box.pad_y, width, height)


def prepare(
    image: np.ndarray, new_hw: tuple[int, int], dtype: type[np.floating] | np.dtype = np.float32
) -> tuple[np.ndarray, Letterbox]:
    padded, box = letterbox(image, new_hw)
    return to_tensor(padded, dtype), box
