"""Which finished frames are copied to review/ for retraining: the twin's desired `review`.

A frame is chosen for any of three reasons (`reasons`):
    class    it has a detection of one of `classes`;
    band     it has a detection whose confidence lies in `confidenceBand` - the uncertain ones; when the band
             reaches below the confidence threshold, the dispatcher decodes down to the band's low end and tells
             whether a detection the result does not carry lies in it (`Finished.band_hit`);
    sample   a `sampleRate` share of all frames, decided from the frame id (the same frame, the same answer:
             replicas agree, and reprocessing does not change it).
At most `maxPerHour` frames are copied per clock hour (UTC; the count of the current hour is read back from the
output catalog at start). Frames that failed are never copied. The copy is made by share/review.py while the
original is still claimed (before it is archived or deleted); a copy that fails is logged and counted
(`edge_inference_review_skipped{reason="failed"}`), never the frame's failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from edge_inference.entities import FrameResult
from edge_inference.names import shown
from edge_inference.ops.live_settings import ReviewSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Finished
from edge_inference.share.catalog import OutputCatalog
from edge_inference.share.claims import ClaimArea
from edge_inference.share.review import ReviewWriter

log = logging.getLogger(__name__)


def sampled(frame_id: str, rate: float) -> bool:
    """Whether the frame falls in a `rate` share of all frames (from its id's leading hex digits)."""
    if rate <= 0:
        return False
    try:
        value = int(frame_id[:8], 16) / 0xFFFFFFFF
    except ValueError:
        value = (hash(frame_id) & 0xFFFFFFFF) / 0xFFFFFFFF
    return value < rate


def reasons(result: FrameResult, band_hit: bool, review: ReviewSettings) -> list[str]:
    """Why this result is chosen for review (empty: it is not)."""
    if not review.enabled or not result.ok:
        return []
    why = []
    if review.classes and any(f.label in review.classes for f in result.findings):
        why.append("class")
    if review.band is not None:
        low, high = review.band
        # a classifier's uncertainty is its top class's confidence, found over the threshold or not
        scores = [result.classification.top1] if result.classification is not None else result.findings
        if band_hit or any(low <= s.confidence <= high for s in scores):
            why.append("band")
    if sampled(result.frame_id, review.sample_rate):
        why.append("sample")
    return why


class ReviewSelector:
    """Chooses frames for review as they finish, within the hourly cap, and has them copied."""

    def __init__(
        self,
        writer: ReviewWriter,
        claims: ClaimArea,
        catalog: OutputCatalog,
        metrics: MetricsRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.claims = claims
        self.metrics = metrics
        self.clock = clock
        self._hour = self._hour_of(clock())
        self._count = catalog.count_since("review", self._hour)  # copies already made this hour (a restart)
        self._capped_hour = -1.0

    @staticmethod
    def _hour_of(now: float) -> float:
        return now - now % 3600

    def consider(self, finished: Finished) -> bool:
        """Copy this finished frame to review/ when it is chosen; True when it was copied."""
        review = finished.live.review
        why = reasons(finished.result, finished.band_hit, review)
        if not why:
            return False
        now = self.clock()
        hour = self._hour_of(now)
        if hour != self._hour:
            self._hour, self._count = hour, 0
        if self._count >= review.max_per_hour:
            self.metrics.review_skipped.labels(reason="hourlyCap").inc()
            if self._capped_hour != hour:
                self._capped_hour = hour
                log.info("review: %d frames copied this hour (maxPerHour): the others wait for the next", self._count)
            return False
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        try:
            self.writer.copy(
                finished.result,
                self.claims.location(finished.job.rel_path),
                day,
                crops=review.crops,
                padding=review.padding,
            )
        except Exception as exc:  # a review copy never fails the frame
            self.metrics.review_skipped.labels(reason="failed").inc()
            log.warning("review: cannot copy %s: %s", shown(finished.job.rel_path), exc)
            return False
        self._count += 1
        for reason in why:
            self.metrics.review_copies.labels(reason=reason).inc()
        return True
