"""A frame's outcome: its `FrameResult` (the one result schema), and the counts every outcome adds to.

`ResultMaker` builds the result of a frame from what the stages learnt (the prepared frame, the model that
judged it, detections or the error, timings, the live settings it was judged by); it also knows how many times each frame was processed again
on request (`reprocess`), so that the n-th run's result carries `<frame id>.r<n>` as its message id.
`FrameCounters` counts finished frames by outcome for getStatus and the metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from edge_inference.entities import (
    Classification,
    Detection,
    FrameJob,
    FrameResult,
    ModelInfo,
    PreparedFrame,
    utc_now_iso,
)
from edge_inference.errors import FrameError
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.vision.serving import ModelSlot


class ResultMaker:
    """Builds `FrameResult`s; holds the reprocess generation of each frame (from the ledger)."""

    def __init__(self, slot: ModelSlot, live: LiveSettings, generations: Mapping[str, int]) -> None:
        self.slot = slot
        self.live = live
        self._generations = dict(generations)  # frame_id -> times processed again on request
        self._lock = threading.Lock()

    def reopened(self, generations: Mapping[str, int]) -> None:
        """Frames processed again on request, with their new generation (from `Ledger.reopen`)."""
        with self._lock:
            self._generations.update(generations)

    def forget(self, frame_ids: Iterable[str]) -> None:
        """Frames the ledger forgot (retention)."""
        with self._lock:
            for frame_id in frame_ids:
                self._generations.pop(frame_id, None)

    def make(
        self,
        job: FrameJob,
        prepared: PreparedFrame | None,
        model: ModelInfo | None = None,
        *,
        detections: tuple[Detection, ...] = (),
        classification: Classification | None = None,
        error: FrameError | None = None,
        timings: Mapping[str, float] | None = None,
        live: TwinSettings | None = None,
    ) -> FrameResult:
        live = live or self.live.current()
        timings_ms = dict(timings or {})
        timings_ms["total"] = (time.monotonic() - job.enqueued_at) * 1000
        with self._lock:
            generation = self._generations.get(job.frame_id)
        return FrameResult(
            rel_path=job.rel_path,
            frame_id=f"{job.frame_id}.r{generation}" if generation else job.frame_id,
            width=prepared.size[0] if prepared else None,
            height=prepared.size[1] if prepared else None,
            sha256=prepared.sha256 if prepared else None,
            model=model or self.slot.active.info(),  # None: a frame no model judged
            confidence_threshold=live.confidence_threshold,
            iou_threshold=live.iou_threshold,
            detections=detections,
            timings_ms=timings_ms,
            processed_at=utc_now_iso(),
            error=error.as_dict() if error else None,
            classification=classification,
            profile=live.profile.name if live.profile is not None else None,
        )


class FrameCounters:
    """Frames finished, by outcome; /predict answers; the latest result's time. Sets the frame metrics."""

    def __init__(self, metrics: MetricsRegistry) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._counts = {"ok": 0, "failed": 0, "detections": 0, "http": 0}
        self.last_result_at: str | None = None

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def finished(self) -> int:
        """Share frames finished so far (ok and failed)."""
        with self._lock:
            return self._counts["ok"] + self._counts["failed"]

    def observe(self, result: FrameResult) -> None:
        """Per-stage latencies of one result (write and send are observed by the finish stage)."""
        for stage, ms in result.timings_ms.items():
            if stage not in ("write", "send", "tiles"):  # tiles: a count, not a time
                self.metrics.stage_seconds.labels(stage=stage).observe(ms / 1000)

    def count(self, result: FrameResult) -> None:
        """A finished share frame (or one refused without being read)."""
        outcome = "ok" if result.ok else "failed"
        with self._lock:
            self._counts[outcome] += 1
            self._counts["detections"] += len(result.findings)
            self.last_result_at = result.processed_at
        self.metrics.frames.labels(outcome=outcome).inc()
        if result.error is not None:
            self.metrics.failures.labels(code=result.error["code"]).inc()
        for found in result.findings:
            self.metrics.detections.labels(label=found.label).inc()

    def answered(self, result: FrameResult) -> None:
        """A /predict request answered."""
        with self._lock:
            self._counts["http"] += 1
        self.observe(result)

    def as_status(self) -> dict[str, Any]:
        return {"frames": self.snapshot(), "lastResultAt": self.last_result_at}
