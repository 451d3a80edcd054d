"""The live page's ring of recent frames (ops/recent_frames.py): its capacity, its memory bound on full images,
thumbnails made from what is held, the filters, and the figures (frames/s, drop-to-result latency, last hour)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from edge_inference.entities import Detection, FrameResult, ModelInfo, utc_now_iso
from edge_inference.ops.recent_frames import THUMB_SIDE, FrameFigures, RecentFrames, thumbnail_size


def result(name: str, found: int = 1, error: str | None = None, profile: str | None = None) -> FrameResult:
    detections = tuple(Detection("scratch", 0, 0.9, (10.0, 10.0, 50.0, 40.0)) for _ in range(found))
    return FrameResult(
        rel_path=name,
        frame_id=name,
        width=640,
        height=480,
        sha256=None,
        model=ModelInfo("m", "1", "CPUExecutionProvider"),
        confidence_threshold=0.5,
        iou_threshold=0.45,
        detections=() if error else detections,
        timings_ms={},
        processed_at=utc_now_iso(),
        error={"code": error, "message": "bad"} if error else None,
        profile=profile,
    )


def image(width: int = 640, height: int = 480) -> np.ndarray:
    picture = np.full((height, width, 3), 60, np.uint8)
    picture[100:200, 100:300] = 220
    return picture


def test_the_ring_keeps_the_newest_frames_only() -> None:
    ring = RecentFrames(3)
    for i in range(5):
        ring.add(result(f"f{i}.jpg"), image(), time.time())
    assert [f["path"] for f in ring.frames()] == ["f2.jpg", "f3.jpg", "f4.jpg"]
    assert [f["id"] for f in ring.frames(after=3)] == [4, 5]
    assert ring.latest == 5
    assert ring.result(1) is None and ring.thumbnail(1) is None  # gone from the ring
    assert ring.result(5) is not None and ring.result(5)["frame"]["path"] == "f4.jpg"  # type: ignore[index]


def test_full_images_stay_within_the_memory_bound_and_older_frames_keep_a_thumbnail() -> None:
    one = image().nbytes
    ring = RecentFrames(10, full_images_bytes=2 * one)
    for i in range(6):
        ring.add(result(f"f{i}.jpg"), image(), time.time())
    assert ring.image_bytes == 2 * one
    held = [f["fullImage"] for f in ring.frames()]
    assert held == [False, False, False, False, True, True]  # the newest two
    assert ring.full_image(1) is None
    full = ring.full_image(6)
    assert full is not None
    decoded = cv2.imdecode(np.frombuffer(full, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (480, 640, 3)
    for seq in (1, 6):  # from the subsample kept when the image was let go, and from the full image
        thumb = ring.thumbnail(seq)
        assert thumb is not None
        small = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR)
        assert max(small.shape[:2]) <= THUMB_SIDE
        assert small[int(150 * small.shape[0] / 480), int(200 * small.shape[1] / 640)].mean() > 180  # the patch
    assert ring.thumbnail(1) is ring.thumbnail(1)  # encoded once, then kept


def test_a_frame_that_never_decoded_has_no_picture_and_filters_pick_frames() -> None:
    ring = RecentFrames(10)
    ring.add(result("a.jpg", found=2, profile="line1"), image(), None)
    ring.add(result("b.jpg", found=0, profile="line2"), image(), None)
    ring.add(result("c.jpg", error="not_an_image", profile="line1"), None, None)
    assert ring.thumbnail(3) is None and ring.full_image(3) is None
    assert [f["path"] for f in ring.frames(only="detections")] == ["a.jpg"]
    assert [f["path"] for f in ring.frames(only="failed")] == ["c.jpg"]
    assert [f["path"] for f in ring.frames(profile="line1")] == ["a.jpg", "c.jpg"]
    assert ring.frames()[0]["labels"] == ["scratch"] and ring.frames()[0]["count"] == 2


def test_a_ring_of_none_keeps_no_frames_but_counts_the_figures() -> None:
    ring = RecentFrames(0)
    assert not ring.wants_images
    ring.add(result("a.jpg"), image(), time.time() - 0.2)
    assert ring.frames() == []
    snap = ring.snapshot()
    assert snap["latencyMs"]["frames"] == 1 and snap["latencyMs"]["p50"] >= 200


def test_figures_rate_latency_and_the_last_hour_by_minute() -> None:
    figures = FrameFigures()
    start = 1_800_000_000.0  # on a minute boundary
    for i in range(120):  # two minutes at 1 frame/s, 100 ms then 300 ms from drop to result
        figures.add(0.1 if i < 60 else 0.3, ok=i % 10 != 0, now=start + i)
    snap = figures.snapshot(now=start + 120)
    assert snap["framesPerSecond"] == pytest.approx(1.0, abs=0.11)
    assert snap["latencyMs"]["p50"] == pytest.approx(300.0)
    assert [m["latencyMs"] for m in snap["lastHour"]] == [100.0, 300.0]
    assert [m["failed"] for m in snap["lastHour"]] == [6, 6]
    assert snap["lastHour"][0]["framesPerSecond"] == 1.0
    later = figures.snapshot(now=start + 3 * 3600)
    assert later["framesPerSecond"] == 0 and later["lastHour"] == [] and later["latencyMs"]["p50"] is None


def test_thumbnail_size_fits_the_long_side_and_never_enlarges() -> None:
    assert thumbnail_size(1920, 1080) == (320, 180)
    assert thumbnail_size(1080, 1920) == (180, 320)
    assert thumbnail_size(100, 50) == (100, 50)
