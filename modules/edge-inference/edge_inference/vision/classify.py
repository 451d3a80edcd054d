"""Classification: the input transform Ultralytics' classify predictor uses, and the top classes of its output.

The transform is not the letterbox. Ultralytics runs torchvision's `classify_transforms` on a PIL image: for a
square input of size S, `Resize(S)` (the shorter side to S, the longer to int(S * long / short), Pillow's bilinear
filter, which antialiases when it shrinks), then `CenterCrop(S)` (offsets `int(round((H - S) / 2))`, Python's
rounding), then `ToTensor` (RGB, / 255; the default mean 0 and std 1 change nothing). A non-square input (H, W) is
a plain `Resize((H, W))` (the image stretched to it). Pillow is used here too, so the pixels are the same.

The output: Ultralytics' classify head ends in a softmax when exported, so its outputs are probabilities and are
used as they are; a classifier whose graph ends in logits (another tool's export) gets a softmax here
(`looks_like_probabilities` decides once, at warm-up, on real outputs).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from edge_inference.entities import Classification, ClassScore, Letterbox

TOP = 5


def classify_geometry(width: int, height: int, input_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized width, height), (crop left, top)) of the classify transform for an image of width x height."""
    target_h, target_w = input_hw
    if target_h != target_w:
        return (target_w, target_h), (0, 0)
    size = target_h
    resized = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    return resized, (round((resized[0] - size) / 2.0), round((resized[1] - size) / 2.0))  # Python's round


def classify_transform(
    image_bgr: np.ndarray, input_hw: tuple[int, int], dtype: type[np.floating] | np.dtype = np.float32
) -> tuple[np.ndarray, Letterbox]:
    """BGR HWC uint8 -> [1, 3, H, W] RGB in 0..1 (the model's dtype), and the geometry (a centre crop is a
    letterbox with negative padding: original pixel x lands at x * scale - left)."""
    h, w = image_bgr.shape[:2]
    (new_w, new_h), (left, top) = classify_geometry(w, h, input_hw)
    rgb = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    if (new_w, new_h) != (w, h):
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    target_h, target_w = input_hw
    crop = np.asarray(rgb)[top : top + target_h, left : left + target_w]
    tensor = (crop.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
    geometry = Letterbox(scale=new_w / w, pad_x=float(-left), pad_y=float(-top), width=w, height=h)
    return np.ascontiguousarray(tensor, dtype=dtype), geometry


def looks_like_probabilities(rows: np.ndarray) -> bool:
    """Each row in [0, 1] and summing to 1 (within fp16 rounding): the graph ends in a softmax."""
    values = np.asarray(rows, dtype=np.float64).reshape(rows.shape[0], -1)
    in_range = bool(((values >= -1e-3) & (values <= 1 + 1e-3)).all())
    return in_range and bool(np.allclose(values.sum(axis=1), 1.0, atol=5e-3))


def softmax(row: np.ndarray) -> np.ndarray:
    shifted = np.exp(row - row.max())
    result: np.ndarray = shifted / shifted.sum()
    return result


def top_classes(
    row: np.ndarray,
    class_names: tuple[str, ...],
    *,
    logits: bool,
    keep_class_ids: frozenset[int] | None,
    max_classes: int,
) -> Classification | None:
    """The best class and the five best (at most `max_classes`), among `keep_class_ids` when given; None when the
    kept classes are none of the model's."""
    scores = np.asarray(row, dtype=np.float32).reshape(-1)
    probs = softmax(scores) if logits else scores
    ids = np.arange(len(probs)) if keep_class_ids is None else np.array(sorted(keep_class_ids), dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < len(probs))]
    if not len(ids):
        return None
    order = ids[np.argsort(-probs[ids], kind="stable")][: max(1, min(TOP, max_classes))]

    def score(cid: int) -> ClassScore:
        return ClassScore(class_names[cid] if cid < len(class_names) else str(cid), cid, float(probs[cid]))

    ranked = tuple(score(int(c)) for c in order)
    return Classification(ranked[0], ranked)
