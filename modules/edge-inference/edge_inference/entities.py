"""Frozen records that cross stage boundaries: a frame job, a prepared tensor, a detection, a result.

The letterbox geometry travels with the prepared frame so that boxes map back exactly to the original
pixels; timings accumulate per frame as it moves through the stages. The result schema (`FrameResult.as_dict`,
version 1.1) is one for every task: detections (with a `mask` for segment, `keypoints` for pose, `obb` and
`polygon` for OBB; `box` is always the axis-aligned bound) or a `classification` for classify.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_inference.names import name_bytes, shown

SCHEMA_VERSION = "1.1"

FrameSource = Literal["events", "poll", "scan", "fileEvent", "reprocess", "recovered", "http"]


@dataclass(frozen=True)
class FrameJob:
    """A complete frame found on the input share (or posted over HTTP), claimed for processing.

    `rel_path` is the POSIX path relative to INPUT_DIR (the key of every output path); `path` is where the
    bytes are now (inside this replica's claim area when the disposition moves files). Both keep the file
    system's bytes (names.py): a name that is not UTF-8 holds surrogate escapes, shown escaped in results.
    """

    rel_path: str
    path: Path
    size: int
    mtime_ns: int
    source: FrameSource
    enqueued_at: float  # time.monotonic() when it entered the queue
    data: bytes | None = None  # in-memory frames (/predict) carry their bytes

    @property
    def frame_id(self) -> str:
        """Deterministic id of this frame version: the telemetry message_id and the ledger key. Hashes the name's
        file-system bytes, so a name that is not UTF-8 has a stable id too."""
        key = name_bytes(self.rel_path) + f"\0{self.size}\0{self.mtime_ns}".encode()
        return hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True)
class Letterbox:
    """How an original frame was resized and padded into the model input."""

    scale: float  # model pixels per original pixel
    pad_x: float  # left padding in model pixels
    pad_y: float  # top padding in model pixels
    width: int  # original frame width
    height: int  # original frame height

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map [N, 4] x1,y1,x2,y2 boxes from model input pixels back to original pixels, clipped."""
        out = boxes_xyxy.astype(np.float32, copy=True)
        xs, ys = out[:, 0::2], out[:, 1::2]  # views: x1, x2 and y1, y2
        xs -= self.pad_x
        ys -= self.pad_y
        out /= self.scale
        np.clip(xs, 0, self.width, out=xs)
        np.clip(ys, 0, self.height, out=ys)
        return out

    def points_to_original(self, points_xy: np.ndarray, *, clip: bool = True) -> np.ndarray:
        """Map [..., 2] x, y points from model input pixels back to original pixels (clipped to the frame)."""
        out = points_xy.astype(np.float32, copy=True)
        out[..., 0] -= self.pad_x
        out[..., 1] -= self.pad_y
        out /= self.scale
        if clip:
            np.clip(out[..., 0], 0, self.width, out=out[..., 0])
            np.clip(out[..., 1], 0, self.height, out=out[..., 1])
        return out


@dataclass(frozen=True)
class FrameView:
    """One model input cut from a frame: a tile (or the ROI crop) letterboxed, and where its region lies in the
    frame (`origin`, the region's top-left in original pixels; its size is the letterbox's width x height)."""

    tensor: np.ndarray
    letterbox: Letterbox
    origin: tuple[int, int] = (0, 0)
    tile: bool = False  # a tile (its inner edges may cut boxes), not the full-frame pass


@dataclass(frozen=True)
class PreparedFrame:
    """A decoded, letterboxed frame ready for the batcher. `tensor` is CHW in the model's dtype.

    A frame judged by a camera profile may be a region of the frame (the ROI crop: `origin`, `frame_wh`) and carry
    `tiles`, more views of the same frame that the batcher runs with it and the dispatcher merges (`views`)."""

    job: FrameJob
    tensor: np.ndarray
    letterbox: Letterbox
    sha256: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None  # the decoded BGR frame, kept only when annotation is wanted
    origin: tuple[int, int] = (0, 0)  # where `tensor`'s region lies in the frame
    frame_wh: tuple[int, int] | None = None  # the whole frame's size when `tensor` is a region of it
    tiles: tuple[FrameView, ...] = ()
    first_is_tile: bool = False  # `tensor` is a tile (tiling without the full-frame pass)
    # the vision/preprocess.py InputTransform that made `tensor`: after a model swap, a frame made for the old
    # model's input is made again for the new one (vision/serving.py `refit`); None: the serving model's
    transform: Any = None

    @property
    def size(self) -> tuple[int, int]:
        """The original frame's width and height."""
        return self.frame_wh or (self.letterbox.width, self.letterbox.height)

    @property
    def views(self) -> tuple[FrameView, ...]:
        """Every model input of this frame: the first (whole frame, ROI crop or first tile), then the tiles."""
        return (FrameView(self.tensor, self.letterbox, self.origin, self.first_is_tile), *self.tiles)


def _point(x: float, y: float) -> list[float]:
    return [round(x, 1), round(y, 1)]


@dataclass(frozen=True)
class Mask:
    """A segmentation mask in original pixels: its outlines (simplified polygons) and its area. `bitmap` is the
    mask at full resolution over the detection's box (0/1, top-left at `origin`): for the mask PNG, not the schema."""

    polygons: tuple[tuple[tuple[float, float], ...], ...]
    area_px: int
    bitmap: np.ndarray | None = field(default=None, compare=False, repr=False)
    origin: tuple[int, int] = (0, 0)  # (x, y) of the bitmap's top-left pixel in the frame

    def as_dict(self) -> dict[str, Any]:
        return {"polygons": [[_point(x, y) for x, y in polygon] for polygon in self.polygons], "areaPx": self.area_px}


@dataclass(frozen=True)
class RotatedBox:
    """An oriented box in original pixels: centre, width, height, and the angle in radians (as the model gives it)."""

    cx: float
    cy: float
    w: float
    h: float
    angle: float

    def corners(self) -> tuple[tuple[float, float], ...]:
        """The 4 corners, in order around the box (the first is the centre + half the w side + half the h side)."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        wx, wy = self.w / 2 * cos, self.w / 2 * sin
        hx, hy = -self.h / 2 * sin, self.h / 2 * cos
        return tuple(
            (float(self.cx + sw * wx + sh * hx), float(self.cy + sw * wy + sh * hy))
            for sw, sh in ((1, 1), (1, -1), (-1, -1), (-1, 1))
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "cx": round(self.cx, 1),
            "cy": round(self.cy, 1),
            "w": round(self.w, 1),
            "h": round(self.h, 1),
            "angle": round(self.angle, 4),
        }


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    confidence: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels (for OBB: the axis-aligned bound)
    mask: Mask | None = None  # segment
    keypoints: tuple[tuple[float, ...], ...] | None = None  # pose: (x, y, confidence) or (x, y) per keypoint
    obb: RotatedBox | None = None  # obb

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "label": self.label,
            "classId": self.class_id,
            "confidence": round(self.confidence, 4),
            "box": [round(v, 1) for v in self.box],
        }
        if self.mask is not None:
            body["mask"] = self.mask.as_dict()
        if self.keypoints is not None:
            body["keypoints"] = [[*_point(k[0], k[1]), *(round(v, 4) for v in k[2:])] for k in self.keypoints]
        if self.obb is not None:
            body["obb"] = self.obb.as_dict()
            body["polygon"] = [_point(x, y) for x, y in self.obb.corners()]
        return body


@dataclass(frozen=True)
class ClassScore:
    label: str
    class_id: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "classId": self.class_id, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True)
class Classification:
    """A classifier's answer for the whole frame: the top class and the five best (best first)."""

    top1: ClassScore
    top5: tuple[ClassScore, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**self.top1.as_dict(), "top5": [c.as_dict() for c in self.top5]}


@dataclass(frozen=True)
class ModelInfo:
    """The model that made a result (vision/model.py `OnnxModel.info()`), as every result names it."""

    name: str
    version: str
    provider: str
    sha256: str = ""
    task: str = "detect"

    def as_dict(self) -> dict[str, str]:
        """The `model` object of results, messages and reports: every one names the model that made it."""
        return {
            "name": self.name,
            "version": self.version,
            "provider": self.provider,
            "sha256": self.sha256,
            "task": self.task,
        }


def utc_now_iso() -> str:
    """`2026-11-22T10:00:00.123Z`: UTC with milliseconds, as in the result schema."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class FrameResult:
    """The one result object: written to results/, sent as telemetry, returned by /predict."""

    rel_path: str
    frame_id: str  # the frame version's id, `.r<n>` added for its n-th reprocess: the messages' id
    width: int | None
    height: int | None
    sha256: str | None
    model: ModelInfo
    confidence_threshold: float
    iou_threshold: float
    detections: tuple[Detection, ...]
    timings_ms: dict[str, float]
    processed_at: str
    error: dict[str, str] | None = None
    classification: Classification | None = None  # classify models
    profile: str | None = None  # the camera profile that judged the frame (null: the global settings)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def findings(self) -> tuple[ClassScore, ...]:
        """What the frame was found to contain, for counts, labels, alerts and routing: its detections, or a
        classifier's top class when its confidence is over the threshold (a classification is always in the body)."""
        if self.classification is not None:
            top = self.classification.top1
            return (top,) if top.confidence > self.confidence_threshold else ()
        return tuple(ClassScore(d.label, d.class_id, d.confidence) for d in self.detections)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "frame": {"path": shown(self.rel_path), "width": self.width, "height": self.height, "sha256": self.sha256},
            "model": self.model.as_dict(),
            "profile": self.profile,
            "thresholds": {"confidence": self.confidence_threshold, "iou": self.iou_threshold},
            "detections": [d.as_dict() for d in self.detections],
            "count": len(self.detections),
            "timingsMs": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "processedAt": self.processed_at,
        }
        if self.classification is not None:
            body["classification"] = self.classification.as_dict()
        if self.error is not None:
            body["error"] = {key: shown(value) for key, value in self.error.items()}
        return body
