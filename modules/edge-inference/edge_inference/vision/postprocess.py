"""Decoding one image's model outputs into what the result schema reports, as Ultralytics' predictor does.

Per layout (vision/heads.py): candidates over the confidence threshold (strictly, as Ultralytics: `score > conf`;
YOLOv5's score is objectness x class score; a class with its own threshold, `classThresholds`, over that one
instead), the classes the twin keeps, then NMS where the graph has none
(vision/nms.py: the same decisions as Ultralytics, 30,000 candidates at most, `max_det` after), or for graphs with
NMS in them the first `max_det` rows over the threshold, in the graph's order. Then per task:
- detect: boxes back to original pixels through the frame's `Letterbox`, clipped;
- segment: masks from the prototypes (vision/masks.py); a detection with an empty mask is dropped;
- pose: keypoints mapped back like boxes (clipped), their confidence kept;
- obb: centre, size and angle back to original pixels; `box` is the axis-aligned bound of the corners;
- classify: the top class and the five best (vision/classify.py).
Everything per candidate is vectorised with NumPy; NMS runs in OpenCV's C++.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_inference.entities import Classification, Detection, Letterbox, RotatedBox
from edge_inference.vision import nms
from edge_inference.vision.classify import top_classes
from edge_inference.vision.heads import Head
from edge_inference.vision.masks import MaskMaker


@dataclass(frozen=True)
class DecodeOptions:
    confidence: float
    iou: float
    max_detections: int
    agnostic: bool = False
    keep_class_ids: frozenset[int] | None = None  # None: every class
    class_thresholds: tuple[tuple[int, float], ...] = ()  # (class id, confidence) replacing `confidence` for it

    @property
    def lowest(self) -> float:
        """The lowest confidence any class may be kept at: the first cut."""
        return min((self.confidence, *(t for _, t in self.class_thresholds)))


@dataclass(frozen=True)
class Decoded:
    detections: tuple[Detection, ...] = ()
    classification: Classification | None = None


@dataclass(frozen=True)
class _Candidates:
    boxes: np.ndarray  # [M, 4] xyxy in model pixels (cx, cy, w, h for OBB)
    scores: np.ndarray  # [M]
    class_ids: np.ndarray  # [M] int64
    extras: np.ndarray  # [M, E]

    def take(self, index: np.ndarray) -> _Candidates:
        return _Candidates(self.boxes[index], self.scores[index], self.class_ids[index], self.extras[index])


def _xyxy(cxcywh: np.ndarray) -> np.ndarray:
    out = np.empty_like(cxcywh)
    half_w, half_h = cxcywh[:, 2] / 2, cxcywh[:, 3] / 2
    out[:, 0] = cxcywh[:, 0] - half_w
    out[:, 1] = cxcywh[:, 1] - half_h
    out[:, 2] = cxcywh[:, 0] + half_w
    out[:, 3] = cxcywh[:, 1] + half_h
    return out


class Decoder:
    """Decodes the outputs of one image for a model's head; `logits`: a classifier without a softmax."""

    def __init__(
        self, head: Head, class_names: tuple[str, ...], input_hw: tuple[int, int], *, logits: bool = False
    ) -> None:
        self.head = head
        self.class_names = class_names
        self.input_hw = input_hw
        self.logits = logits

    def decode(self, outputs: Sequence[np.ndarray], letterbox: Letterbox, options: DecodeOptions) -> Decoded:
        """`outputs`: the model's outputs for this image, the batch axis already indexed."""
        head = self.head
        out = np.asarray(outputs[head.output], dtype=np.float32)
        if head.layout == "classify":
            return Decoded(
                classification=top_classes(
                    out,
                    self.class_names,
                    logits=self.logits,
                    keep_class_ids=options.keep_class_ids,
                    max_classes=options.max_detections,
                )
            )
        found = self._candidates(out, options)
        if head.needs_nms:
            found = self._suppress(found, options)
        if not len(found.scores):
            return Decoded()
        protos = None if head.proto is None else outputs[head.proto]
        return Decoded(self._detections(found, letterbox, protos))

    def _candidates(self, out: np.ndarray, options: DecodeOptions) -> _Candidates:
        head = self.head
        c, conf = head.num_classes, options.lowest
        if head.layout == "yolov8":  # [4+C+E, N]
            assert c is not None
            class_scores = out[4 : 4 + c]
            class_ids = class_scores.argmax(axis=0)
            scores = class_scores[class_ids, np.arange(class_scores.shape[1])]
            keep = scores > conf
            found = _Candidates(out[:4, keep].T, scores[keep], class_ids[keep], out[4 + c :, keep].T)
        elif head.layout == "yolov5":  # [N, 5+C+E]
            assert c is not None
            rows = out[out[:, 4] > conf]  # score = objectness x class score <= objectness: a cheap first cut
            class_scores = rows[:, 5 : 5 + c] * rows[:, 4:5]
            class_ids = class_scores.argmax(axis=1)
            scores = class_scores[np.arange(len(rows)), class_ids]
            keep = scores > conf
            found = _Candidates(rows[keep, :4], scores[keep], class_ids[keep], rows[keep, 5 + c :])
        else:  # end2end / rows: box, score, class, extras; the graph's first `max_det` over the threshold
            rows = out[out[:, 4] > conf][: options.max_detections]
            found = _Candidates(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64), rows[:, 6:])
        if head.layout in ("yolov8", "yolov5") and head.task != "obb":
            found = _Candidates(_xyxy(found.boxes), found.scores, found.class_ids, found.extras)
        if options.keep_class_ids is not None and len(found.scores):
            wanted = np.fromiter(options.keep_class_ids, dtype=np.int64)
            found = found.take(np.isin(found.class_ids, wanted))
        if options.class_thresholds and len(found.scores):
            cut = np.full(len(found.scores), options.confidence, dtype=np.float32)
            for class_id, threshold in options.class_thresholds:
                cut[found.class_ids == class_id] = threshold
            found = found.take(found.scores > cut)
        return found

    def _suppress(self, found: _Candidates, options: DecodeOptions) -> _Candidates:
        top = nms.top_candidates(found.scores)
        if top is not None:
            found = found.take(top)
        if self.head.task == "obb":
            xywhr = np.concatenate([found.boxes, found.extras[:, -1:]], axis=1)
            kept = nms.nms_rotated(xywhr, found.scores, found.class_ids, options.iou, options.agnostic)
        else:
            kept = nms.nms_boxes(found.boxes, found.scores, found.class_ids, options.iou, options.agnostic)
        return found.take(kept[: options.max_detections])

    def _detections(self, found: _Candidates, letterbox: Letterbox, protos: np.ndarray | None) -> tuple[Detection, ...]:
        head = self.head
        names = self.class_names
        masks = None if protos is None else MaskMaker(protos, self.input_hw, letterbox)
        rotated = self._rotated(found, letterbox) if head.task == "obb" else None
        boxes = (
            np.array([_bound(r, letterbox) for r in rotated], dtype=np.float32).reshape(-1, 4)
            if rotated is not None
            else letterbox.to_original(found.boxes)
        )
        keypoints = None
        if head.kpt_shape is not None:
            keypoints = found.extras.reshape(len(found.scores), *head.kpt_shape).copy()
            keypoints[..., :2] = letterbox.points_to_original(keypoints[..., :2])
        detections: list[Detection] = []
        for i, ((x1, y1, x2, y2), score, cid) in enumerate(
            zip(boxes.tolist(), found.scores.tolist(), found.class_ids.tolist(), strict=True)
        ):
            if not (x2 > x1 and y2 > y1):  # nothing of it inside the frame
                continue
            mask = None
            if masks is not None:
                mask = masks.mask(found.extras[i], found.boxes[i])
                if mask is None:
                    continue
            detections.append(
                Detection(
                    names[cid] if 0 <= cid < len(names) else str(cid),
                    int(cid),
                    float(score),
                    (x1, y1, x2, y2),
                    mask=mask,
                    keypoints=None if keypoints is None else tuple(tuple(k) for k in keypoints[i].tolist()),
                    obb=None if rotated is None else rotated[i],
                )
            )
        return tuple(detections)

    @staticmethod
    def _rotated(found: _Candidates, letterbox: Letterbox) -> list[RotatedBox]:
        centres = letterbox.points_to_original(found.boxes[:, :2], clip=False)
        sizes = found.boxes[:, 2:4] / letterbox.scale
        angles = found.extras[:, -1]
        return [
            RotatedBox(float(cx), float(cy), float(w), float(h), float(a))
            for (cx, cy), (w, h), a in zip(centres.tolist(), sizes.tolist(), angles.tolist(), strict=True)
        ]


def _bound(box: RotatedBox, letterbox: Letterbox) -> tuple[float, float, float, float]:
    """The axis-aligned bound of a rotated box's corners, clipped to the frame."""
    xs, ys = zip(*box.corners(), strict=True)
    return (
        min(max(min(xs), 0.0), letterbox.width),
        min(max(min(ys), 0.0), letterbox.height),
        min(max(max(xs), 0.0), letterbox.width),
        min(max(max(ys), 0.0), letterbox.height),
    )
