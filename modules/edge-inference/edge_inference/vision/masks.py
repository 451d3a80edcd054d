"""Segmentation masks, made as Ultralytics' predictor makes them, then brought back to the original pixels.

For each kept detection (Ultralytics `process_mask` with `upsample=True`): its mask coefficients times the
prototypes give logits at prototype resolution (H/4 x W/4 of the model input); they are cropped to the box there
(a cell is kept when its index is within [x1, x2) and [y1, y2) of the box scaled to that resolution), upsampled
bilinearly to the model input (PyTorch's `interpolate(mode="bilinear", align_corners=False)`, computed here as two
small weight matrices over the box's window only) and thresholded at logit > 0. A detection whose mask is empty
is dropped, as Ultralytics does.

From that mask: the outlines (`cv2.findContours`, outer contours), simplified to within one model-input pixel
(Douglas-Peucker) and mapped back through the letterbox to original pixels; and the mask at full resolution over
the box (each original pixel sampled at its centre), whose pixel count is `areaPx` and which the mask PNG of
annotated/ is drawn from (`label_map`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_inference.entities import Detection, Letterbox, Mask

SIMPLIFY_EPSILON = 1.0  # model-input pixels: finer detail than that is not in a mask made at that resolution


def _bilinear(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every output index along one axis: the two source indices and the weight of the second
    (align_corners=False: source = (i + 0.5) * in / out - 0.5, clamped at 0, as PyTorch computes it)."""
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo).astype(np.float32)


def _weights(axis: tuple[np.ndarray, np.ndarray, np.ndarray], out: slice, cells: slice) -> np.ndarray:
    """The interpolation weights of output positions `out` over source cells `cells` (others contribute 0)."""
    lo, hi, frac = (a[out] for a in axis)
    count = cells.stop - cells.start
    w = np.zeros((len(lo), count), dtype=np.float32)
    rows = np.arange(len(lo))
    inside_lo = (lo >= cells.start) & (lo < cells.stop)
    inside_hi = (hi >= cells.start) & (hi < cells.stop)
    np.add.at(w, (rows[inside_lo], lo[inside_lo] - cells.start), 1.0 - frac[inside_lo])
    np.add.at(w, (rows[inside_hi], hi[inside_hi] - cells.start), frac[inside_hi])
    return w


class MaskMaker:
    """Masks of one image's detections from its prototype output."""

    def __init__(self, protos: np.ndarray, input_hw: tuple[int, int], letterbox: Letterbox) -> None:
        self.protos = np.asarray(protos, dtype=np.float32)  # [E, mh, mw]
        _, self.mh, self.mw = self.protos.shape
        self.ih, self.iw = input_hw
        self.letterbox = letterbox
        self._rows = _bilinear(self.ih, self.mh)
        self._cols = _bilinear(self.iw, self.mw)

    def mask(self, coefficients: np.ndarray, box_model_xyxy: np.ndarray) -> Mask | None:
        """The mask of one detection (box in model-input pixels), or None when it is empty."""
        x1, y1, x2, y2 = (float(v) for v in box_model_xyxy)
        sx, sy = self.mw / self.iw, self.mh / self.ih
        cols = slice(max(0, math.ceil(x1 * sx)), min(self.mw, math.ceil(x2 * sx)))
        rows = slice(max(0, math.ceil(y1 * sy)), min(self.mh, math.ceil(y2 * sy)))
        if cols.start >= cols.stop or rows.start >= rows.stop:
            return None
        block = self.protos[:, rows, cols]
        logits = np.tensordot(coefficients.astype(np.float32), block, axes=(0, 0))  # [rows, cols] inside the box
        # the model-input pixels this block reaches through the bilinear upsampling (a contiguous window)
        ys = self._window(self._rows, rows)
        xs = self._window(self._cols, cols)
        up = _weights(self._rows, ys, rows) @ logits @ _weights(self._cols, xs, cols).T
        binary = (up > 0).astype(np.uint8)
        if not binary.any():
            return None
        return self._to_original(binary, xs.start, ys.start)

    @staticmethod
    def _window(axis: tuple[np.ndarray, np.ndarray, np.ndarray], cells: slice) -> slice:
        lo, hi, _ = axis
        start = int(np.searchsorted(hi, cells.start, side="left"))  # first output whose upper cell is inside
        stop = int(np.searchsorted(lo, cells.stop - 1, side="right"))  # past the last whose lower cell is inside
        return slice(start, max(start, stop))

    def _to_original(self, binary: np.ndarray, x0: int, y0: int) -> Mask:
        lb = self.letterbox
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polygons = []
        for contour in contours:
            simple = cv2.approxPolyDP(contour, SIMPLIFY_EPSILON, True).reshape(-1, 2).astype(np.float32)
            simple += (x0, y0)
            mapped = lb.points_to_original(simple)
            polygons.append(tuple((float(x), float(y)) for x, y in mapped.tolist()))
        # the original pixels whose centres fall in the window, each sampled at its centre
        h, w = binary.shape
        left = max(0, math.ceil((x0 - lb.pad_x) / lb.scale - 0.5))
        top = max(0, math.ceil((y0 - lb.pad_y) / lb.scale - 0.5))
        right = min(lb.width, math.ceil((x0 + w - lb.pad_x) / lb.scale - 0.5))
        bottom = min(lb.height, math.ceil((y0 + h - lb.pad_y) / lb.scale - 0.5))
        if right <= left or bottom <= top:
            return Mask(tuple(polygons), 0, None, (left, top))
        to_window = np.array(
            [
                [lb.scale, 0.0, (left + 0.5) * lb.scale + lb.pad_x - 0.5 - x0],
                [0.0, lb.scale, (top + 0.5) * lb.scale + lb.pad_y - 0.5 - y0],
            ]
        )
        full = cv2.warpAffine(
            binary * np.uint8(255),
            to_window,
            (right - left, bottom - top),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        bitmap = (full > 127).astype(np.uint8)
        return Mask(tuple(polygons), int(bitmap.sum()), bitmap, (left, top))


def label_map(detections: tuple[Detection, ...], width: int, height: int) -> np.ndarray | None:
    """The frame's masks at full resolution in one image: pixel = 1 + the index of the detection in the result's
    list (0: none), the best detection on top where masks overlap; 8-bit, or 16-bit past 255 detections.
    None when no detection has a mask."""
    if not any(d.mask is not None and d.mask.bitmap is not None for d in detections):
        return None
    labels = np.zeros((height, width), dtype=np.uint8 if len(detections) < 256 else np.uint16)
    for index in range(len(detections) - 1, -1, -1):  # worst first, so the best is drawn last
        mask = detections[index].mask
        if mask is None or mask.bitmap is None:
            continue
        x, y = mask.origin
        region = labels[y : y + mask.bitmap.shape[0], x : x + mask.bitmap.shape[1]]
        region[mask.bitmap[: region.shape[0], : region.shape[1]] > 0] = index + 1
    return labels
