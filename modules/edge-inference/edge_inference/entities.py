"""Frozen records that cross stage boundaries: a frame job, a prepared tensor, a detection, a result.

The letterbox geometry travels with the prepared frame so that boxes map back exactly to the original
pixels; timings accumulate per frame as it moves through the stages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_inference.names import name_bytes, shown

SCHEMA_VERSION = "1.0"

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


@dataclass(frozen=True)
class PreparedFrame:
    """A decoded, letterboxed frame ready for the batcher. `tensor` is CHW in the model's dtype."""

    job: FrameJob
    tensor: np.ndarray
    letterbox: Letterbox
    sha256: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None  # the decoded BGR frame, kept only when annotation is wanted


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    confidence: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "classId": self.class_id,
            "confidence": round(self.confidence, 4),
            "box": [round(v, 1) for v in self.box],
        }


@dataclass(frozen=True)
class ModelInfo:
    """The model that made a result (vision/model.py `OnnxModel.info()`), as every result names it."""

    name: str
    version: str
    provider: str
    sha256: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "provider": self.provider}


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

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "frame": {"path": shown(self.rel_path), "width": self.width, "height": self.height, "sha256": self.sha256},
            "model": self.model.as_dict(),
            "thresholds": {"confidence": self.confidence_threshold, "iou": self.iou_threshold},
            "detections": [d.as_dict() for d in self.detections],
            "count": len(self.detections),
            "timingsMs": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "processedAt": self.processed_at,
        }
        if self.error is not None:
            body["error"] = {key: shown(value) for key, value in self.error.items()}
        return body
