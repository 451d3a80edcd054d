"""What the live page shows of the frames: a ring of the newest UI_RECENT_FRAMES share frames (their results and
pictures) and the figures of the last hour (frames per second, drop-to-result latency), fed by pipeline/finish.py.

Pictures come from the decoded image the finish stage already has; nothing is read again from the shares.
Memory, by construction:
- the full decoded image of the newest frames is kept (a reference, no copy) while the images kept add up to at
  most FULL_IMAGES_BYTES (64 MB: the last ten or so 1920x1080 frames); older frames keep only a thumbnail;
- a thumbnail is at most THUMB_SIDE pixels on its long side: when an image is let go before anyone asked for
  its thumbnail, a strided subsample of it is kept (a cheap copy, no filtering: the finish stage pays ~0.1 ms);
  a thumbnail asked for while the full image is there is an area-filtered resize, made on the asker's thread.
  Once encoded (JPEG, a few kB), only the JPEG is kept;
- the figures are one bucket per minute for an hour and the latencies of the last minute.
Encoding (thumbnails, full frames) happens on the HTTP side, so a page that nobody opens costs the pipeline only
the reference and, for frames past the image budget, the subsample.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge_inference.entities import FrameResult

FULL_IMAGES_BYTES = 64 * 1024 * 1024
THUMB_SIDE = 320
JPEG_QUALITY = 80
RATE_WINDOW_SECONDS = 10.0
HISTORY_MINUTES = 60


@dataclass
class RecentFrame:
    """One finished share frame as the page shows it."""

    seq: int
    result: dict[str, Any]
    ok: bool
    count: int
    profile: str | None
    image: np.ndarray | None = None  # the full decoded image, while within the budget
    small: np.ndarray | None = None  # a strided subsample, once the full image is let go
    thumb_jpeg: bytes | None = None
    labels: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.seq,
            "path": self.result["frame"]["path"],
            "profile": self.profile,
            "ok": self.ok,
            "count": self.count,
            "labels": self.labels,
            "processedAt": self.result.get("processedAt"),
            "fullImage": self.image is not None,
            "result": self.result,
        }


def thumbnail_size(width: int, height: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """(width, height) scaled to fit `side` on the long side, never enlarged."""
    scale = min(1.0, side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the picture as JPEG")
    return bytes(buf.tobytes())


class FrameFigures:
    """Frames per second and drop-to-result latency: live (the last seconds) and per minute for the last hour."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._recent: deque[tuple[float, float]] = deque()  # (finished at, latency s) of the last minute
        self._minutes: deque[dict[str, Any]] = deque(maxlen=HISTORY_MINUTES)

    def add(self, latency: float, ok: bool, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        minute = math.floor(now / 60) * 60
        if not self._minutes or self._minutes[-1]["t"] != minute:
            self._minutes.append({"t": minute, "frames": 0, "failed": 0, "latencySum": 0.0})
        bucket = self._minutes[-1]
        bucket["frames"] += 1
        bucket["failed"] += 0 if ok else 1
        bucket["latencySum"] += latency
        self._recent.append((now, latency))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - 60:
            self._recent.popleft()

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = self._clock() if now is None else now
        self._trim(now)
        window = [lat for at, lat in self._recent if at >= now - RATE_WINDOW_SECONDS]
        minute = sorted(lat for _, lat in self._recent)
        return {
            "framesPerSecond": round(len(window) / RATE_WINDOW_SECONDS, 2),
            "latencyMs": {
                "p50": _percentile_ms(minute, 0.5),
                "p95": _percentile_ms(minute, 0.95),
                "frames": len(minute),
            },
            "lastHour": [
                {
                    "t": b["t"],
                    "framesPerSecond": round(b["frames"] / 60, 3),
                    "failed": b["failed"],
                    "latencyMs": round(b["latencySum"] / b["frames"] * 1000, 1),
                }
                for b in self._minutes
                if b["t"] > now - HISTORY_MINUTES * 60
            ],
        }


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


class RecentFrames:
    """The ring of the newest `capacity` frames (0: no frames kept, figures still counted). Thread-safe: the
    finish stage adds, the HTTP side reads."""

    def __init__(self, capacity: int, full_images_bytes: int = FULL_IMAGES_BYTES) -> None:
        self.capacity = capacity
        self.full_images_bytes = full_images_bytes
        self.figures = FrameFigures()
        self._frames: deque[RecentFrame] = deque()
        self._image_bytes = 0
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def wants_images(self) -> bool:
        """Whether the decode stage should keep each frame's decoded image for the finish stage."""
        return self.capacity > 0

    def add(self, result: FrameResult, image: np.ndarray | None, dropped_at: float | None) -> None:
        """A share frame finished: its result (and the decoded image, when there is one) becomes the newest."""
        now = time.time()
        latency = max(0.0, now - dropped_at) if dropped_at is not None else 0.0
        with self._lock:
            self.figures.add(latency, result.ok, now)
            if self.capacity <= 0:
                return
            self._seq += 1
            entry = RecentFrame(
                self._seq,
                result.as_dict(),
                result.ok,
                len(result.findings),
                result.profile,
                image,
                labels=sorted({f.label for f in result.findings}),
            )
            self._frames.append(entry)
            if image is not None:
                self._image_bytes += image.nbytes
            while len(self._frames) > self.capacity:
                self._let_go(self._frames.popleft(), keep_small=False)
            for old in self._frames:  # oldest first: the newest keep their images
                if self._image_bytes <= self.full_images_bytes:
                    break
                self._let_go(old, keep_small=True)

    def _let_go(self, entry: RecentFrame, *, keep_small: bool) -> None:
        image, entry.image = entry.image, None
        if image is None:
            return
        self._image_bytes -= image.nbytes
        if keep_small and entry.thumb_jpeg is None:
            height, width = image.shape[:2]
            step = max(1, math.ceil(max(width, height) / THUMB_SIDE))
            entry.small = np.ascontiguousarray(image[::step, ::step])

    @property
    def latest(self) -> int:
        return self._seq

    @property
    def image_bytes(self) -> int:
        return self._image_bytes

    def frames(self, after: int = 0, profile: str | None = None, only: str | None = None) -> list[dict[str, Any]]:
        """Summaries (with the result) of the frames newer than `after`, oldest first; `profile` keeps that
        profile's frames, `only` = `detections` or `failed` keeps those."""
        with self._lock:
            chosen = [e for e in self._frames if e.seq > after]
        if profile is not None:
            chosen = [e for e in chosen if (e.profile or "") == profile]
        if only == "detections":
            chosen = [e for e in chosen if e.count > 0]
        elif only == "failed":
            chosen = [e for e in chosen if not e.ok]
        return [e.summary() for e in chosen]

    def _entry(self, seq: int) -> RecentFrame | None:
        with self._lock:
            return next((e for e in self._frames if e.seq == seq), None)

    def result(self, seq: int) -> dict[str, Any] | None:
        entry = self._entry(seq)
        return entry.result if entry is not None else None

    def thumbnail(self, seq: int) -> bytes | None:
        """The frame's thumbnail as JPEG (made once, then kept), or None when the frame has no picture (gone
        from the ring, or failed before it was decoded)."""
        entry = self._entry(seq)
        if entry is None:
            return None
        if entry.thumb_jpeg is not None:
            return entry.thumb_jpeg
        image, small = entry.image, entry.small
        if image is not None:
            height, width = image.shape[:2]
            picture = cv2.resize(image, thumbnail_size(width, height), interpolation=cv2.INTER_AREA)
        elif small is not None:
            picture = small
        else:
            return None
        jpeg = encode_jpeg(picture)
        with self._lock:
            entry.thumb_jpeg, entry.small = jpeg, None
        return jpeg

    def full_image(self, seq: int) -> bytes | None:
        """The frame's full decoded image as JPEG while the ring still holds it (the newest frames), else None."""
        entry = self._entry(seq)
        image = entry.image if entry is not None else None
        return encode_jpeg(image, 90) if image is not None else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            figures = self.figures.snapshot()
            held = {"frames": len(self._frames), "capacity": self.capacity, "imageBytes": self._image_bytes}
        return {**figures, "recent": held}
