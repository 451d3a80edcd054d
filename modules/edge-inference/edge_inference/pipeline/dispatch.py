"""The dispatcher: inferred queue -> postprocess with the live settings that judge the frame (the global ones with
its camera profile's laid over them: ops/live_settings.py `for_frame`) (vision/postprocess.py: thresholds,
NMS, boxes, masks, keypoints and rotated boxes mapped back to the original pixels, or the top classes; for a
frame cut in views, vision/views.py merges its tiles and applies its ROI) by the model that made the output -> a
`FrameResult` naming it. A share frame the model judged whole is then offered to the candidate shadow
(rollout/shadow.py `ShadowInbox`: a sampled, bounded hand-over that never blocks); a frame its profile cut in
views (an ROI, tiles) is not: the shadow compares one tensor's detections, not a merge of views.

A /predict request is answered here (its future completed, its own confidence threshold honoured); share frames
are gathered into a group - whatever else is already done joins it, up to `DISPATCH_GROUP` - and handed to the
finish stage (pipeline/finish.py) on this same thread, so a group costs one durable write. A frame whose file
vanished with its share is handed back to be kept for later, with no result; a frame whose output cannot be read
fails alone (`postprocess_failed`).
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import replace

from edge_inference.entities import FrameResult, PreparedFrame
from edge_inference.errors import FrameError
from edge_inference.names import shown
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Failed, Finished, Inferred, Request, StageQueues, take
from edge_inference.pipeline.finish import Finisher
from edge_inference.pipeline.outcomes import FrameCounters, ResultMaker
from edge_inference.pipeline.predict import PendingRequests
from edge_inference.rollout.shadow import ShadowFrame, ShadowInbox
from edge_inference.settings import Settings
from edge_inference.vision import views as frame_views
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.serving import ModelSlot, decode_options
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

DISPATCH_GROUP = 32  # results made durable together (one file-system flush, one ledger/outbox transaction)


def judged_whole(frame: PreparedFrame, live: TwinSettings) -> bool:
    """The frame's detections came from its one tensor, the whole frame (no ROI crop or filter, no tiles): the
    candidate shadow can run the same tensor and compare. A frame cut in views is skipped by the shadow."""
    return not frame.tiles and frame.frame_wh is None and (live.profile is None or live.profile.roi is None)


class Dispatcher(Worker):
    """The dispatch thread (`dispatch`); it writes results, so it is not a daemon."""

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        live: LiveSettings,
        queues: StageQueues,
        requests: PendingRequests,
        results: ResultMaker,
        counters: FrameCounters,
        finisher: Finisher,
        metrics: MetricsRegistry,
        shadow: ShadowInbox,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("dispatch", supervisor, daemon=False)
        self.settings = settings
        self.slot = slot
        self.shadow = shadow
        self.live = live
        self.queues = queues
        self.requests = requests
        self.results = results
        self.counters = counters
        self.finisher = finisher
        self.metrics = metrics

    def run(self) -> None:
        while not self.stopping:
            first = take(self.queues.inferred)
            if first is None:
                continue
            group = [first]  # whatever else is already done joins this group: one durable write for all
            while len(group) < DISPATCH_GROUP:
                try:
                    group.append(self.queues.inferred.get_nowait())
                except queue.Empty:
                    break
            finished = [f for f in (self.dispatch(done) for done in group) if f is not None]
            if finished:
                self.finisher.finish(finished)
            self.queues.show(self.metrics)

    def dispatch(self, done: Inferred) -> Finished | None:
        """Postprocess one frame; /predict requests are answered here, share frames returned for writing."""
        item = done.item
        job = item.job
        if isinstance(item, Failed) and item.vanished:
            self.finisher.input_vanished(job, item.error)
            return None
        if isinstance(item, Failed) and self.finisher.hold_for_writer(job, item.error):
            return None
        live = self.live.current()
        if job.source != "http":
            live = live.for_frame(job.rel_path)  # its camera profile's settings laid over the global ones
        model = done.model or self.slot.active  # a frame that failed before inference: the model serving now
        request = self.requests.take(job) if job.source == "http" else None
        band_hit = False
        try:
            result, band_hit = self._postprocess(done, model, live, request)
        except Exception as exc:  # this frame's output cannot be read: it fails alone
            log.error("%s: postprocessing failed", shown(job.rel_path), exc_info=exc)
            error = FrameError(FrameError.POSTPROCESS_FAILED, f"postprocessing failed: {type(exc).__name__}: {exc}")
            result = self.results.make(job, None, model.info(), error=error, timings=done.timings_ms, live=live)
        if request is not None:
            self.counters.answered(result)
            request.future.set_result(result)
            return None
        if job.source == "http":
            return None  # a request given up (timed out) while in flight: nobody waits for its answer
        if (
            self.shadow.rate
            and isinstance(item, PreparedFrame)
            and result.ok
            and model is self.slot.active
            and judged_whole(item, live)
        ):
            active_ms = done.timings_ms.get("inference", 0.0)
            self.shadow.offer(
                ShadowFrame(
                    job.frame_id, item.tensor, item.letterbox, item.transform, result.detections, active_ms, live
                )
            )
        return Finished(job, item, result, live, band_hit)

    def _postprocess(
        self, done: Inferred, model: OnnxModel, live: TwinSettings, request: Request | None
    ) -> tuple[FrameResult, bool]:
        """The frame's result, and whether a detection below its confidence threshold (its class's own, from
        `classThresholds` and the frame's profile, or the frame's) lies in the review band (decoded down to the
        band's low end when the band reaches below a threshold; the result keeps only the detections over their
        threshold, exactly as a decode at it would). A frame cut in views is merged and judged by its ROI first."""
        item = done.item
        if isinstance(item, Failed):
            return self.results.make(
                item.job, None, model.info(), error=item.error, timings=done.timings_ms, live=live
            ), False
        t0 = time.monotonic()
        confidence = request.confidence if request and request.confidence is not None else live.confidence_threshold
        judged = decode_options(model, live, agnostic=self.settings.agnostic_nms, confidence=confidence)
        options = judged
        band = live.review.band if request is None and live.review.enabled else None
        lowered = band is not None and band[0] < max((confidence, *(t for _, t in judged.class_thresholds)))
        if band is not None and lowered:  # decoded down to the band's low end, every class threshold too
            floor = band[0]
            options = replace(
                judged,
                confidence=min(confidence, floor),
                class_thresholds=tuple((c, min(t, floor)) for c, t in options.class_thresholds),
            )
        if done.output is None:
            raise ValueError("no model output for this frame")
        decoded = frame_views.read(
            model.decoder, (done.output, *done.tile_outputs), item.views, options, live.profile, item.size
        )
        detections = decoded.detections
        band_hit = False
        if band is not None and lowered:  # kept: over its threshold, strictly, as a decode at it keeps
            own = dict(judged.class_thresholds)  # class id -> its own threshold; the others: `confidence`
            below = [d for d in detections if d.confidence <= own.get(d.class_id, confidence)]
            band_hit = any(band[0] <= d.confidence <= band[1] for d in below)
            detections = tuple(d for d in detections if d.confidence > own.get(d.class_id, confidence))
        timings = {**done.timings_ms, "postprocess": (time.monotonic() - t0) * 1000}
        result = self.results.make(
            item.job,
            item,
            model.info(),
            detections=detections,
            classification=decoded.classification,
            timings=timings,
            live=live,
        )
        if request is not None and request.confidence is not None:
            result = replace(result, confidence_threshold=request.confidence)
        return result, band_hit
