"""The model input, made as Ultralytics' predictor makes it for the model's task.

Detect, segment, pose and OBB: the letterbox. Keep the aspect ratio, resize with `cv2.INTER_LINEAR`, pad with 114
grey, the odd padding pixel at the bottom/right; other kernels or paddings shift the detections of models trained
this way. A model whose height and width are dynamic (an Ultralytics `dynamic=True` export) is padded only to the
next multiple of its stride, as the predictor does for such models (`rect`: 1920x1080 into 640 gives 640x384).
Classify: its own resize and centre crop (vision/classify.py). The geometry (`Letterbox`) travels with the frame so
boxes map back to the original pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from edge_inference.entities import Letterbox
from edge_inference.vision.classify import classify_transform
from edge_inference.vision.model_spec import InputSpec

PAD_VALUE = 114
_FLOAT32: np.dtype[Any] = np.dtype(np.float32)


@dataclass(frozen=True)
class InputTransform:
    """How a frame becomes the model's input: the transform, the input size (h, w), the dtype, and for `rect`
    letterboxing the stride the padding rounds to (None: pad to the full input size)."""

    kind: Literal["letterbox", "classify"]
    input_hw: tuple[int, int]
    dtype: np.dtype[Any] = _FLOAT32
    stride: int | None = None

    @classmethod
    def for_task(cls, task: str, spec: InputSpec, stride: int | None) -> InputTransform:
        """The transform Ultralytics' predictor uses for a model of this task and input."""
        return cls("classify" if task == "classify" else "letterbox", (spec.height, spec.width), spec.dtype, stride)

    def scale(self, width: int, height: int) -> float:
        """Model pixels per original pixel along the axis that decides the size (for reduced JPEG decoding: the
        decoded image must stay at least this large)."""
        h, w = self.input_hw
        if self.kind == "classify":
            return max(h / height, w / width)
        return min(h / height, w / width)


def letterbox(
    image: np.ndarray, new_hw: tuple[int, int], pad_value: int = PAD_VALUE, stride: int | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Resize + pad a BGR image into `new_hw` (height, width), or with `stride` into the smallest multiple of it
    that holds the resized image; returns the padded image and its geometry."""
    h, w = image.shape[:2]
    new_h, new_w = new_hw
    r = min(new_h / h, new_w / w)
    # At least one pixel each way: a 2048x1 strip would otherwise round to 0 rows, which cv2.resize refuses.
    unpad_w, unpad_h = max(1, round(w * r)), max(1, round(h * r))
    dw, dh = new_w - unpad_w, new_h - unpad_h
    if stride:
        dw, dh = dw % stride, dh % stride
    if (unpad_w, unpad_h) != (w, h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return image, Letterbox(scale=r, pad_x=float(left), pad_y=float(top), width=w, height=h)


def to_tensor(padded_bgr: np.ndarray, dtype: type[np.floating] | np.dtype = np.float32) -> np.ndarray:
    """BGR HWC uint8 -> RGB CHW in 0..1 (one fused OpenCV pass), with a leading batch axis of 1."""
    blob = cv2.dnn.blobFromImage(padded_bgr, scalefactor=1.0 / 255.0, swapRB=True)
    return blob if blob.dtype == dtype else blob.astype(dtype)


def prepare_frame(
    image: np.ndarray, original_wh: tuple[int, int], transform: InputTransform
) -> tuple[np.ndarray, Letterbox]:
    """The model input of a frame and its geometry, for an image decoded at full or reduced size: the geometry
    maps to the original frame."""
    if transform.kind == "classify":
        tensor, box = classify_transform(image, transform.input_hw, transform.dtype)
    else:
        tensor, box = prepare(image, transform.input_hw, transform.dtype, transform.stride)
    width, height = original_wh
    if (box.width, box.height) == (width, height):
        return tensor, box
    reduced_per_original = box.width / width
    return tensor, Letterbox(box.scale * reduced_per_original, box.pad_x, box.pad_y, width, height)


def prepare(
    image: np.ndarray,
    new_hw: tuple[int, int],
    dtype: type[np.floating] | np.dtype = np.float32,
    stride: int | None = None,
) -> tuple[np.ndarray, Letterbox]:
    padded, box = letterbox(image, new_hw, stride=stride)
    return to_tensor(padded, dtype), box
