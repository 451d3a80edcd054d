"""The dispatcher: inferred queue -> postprocess with the live settings that judge the frame (the global ones with
its camera profile's laid over them: ops/live_settings.py `for_frame`) (vision/postprocess.py: thresholds,
NMS, boxes, masks, keypoints and rotated boxes mapped back to the original pixels, or the top classes; for a
frame cut in views, vision/views.py merges its tiles and applies its ROI) -> a `FrameResult`.

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

from edge_inference.entities import FrameResult
from edge_inference.errors import FrameError
from edge_inference.names import shown
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Failed, Finished, Inferred, Request, StageQueues, take
from edge_inference.pipeline.finish import Finisher
from edge_inference.pipeline.outcomes import FrameCounters, ResultMaker
from edge_inference.pipeline.predict import PendingRequests
from edge_inference.settings import Settings
from edge_inference.vision import postprocess
from edge_inference.vision import views as frame_views
from edge_inference.vision.model import OnnxModel
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

DISPATCH_GROUP = 32  # results made durable together (one file-system flush, one ledger/outbox transaction)


class Dispatcher(Worker):
    """The dispatch thread (`dispatch`); it writes results, so it is not a daemon."""

    def __init__(
        self,
        settings: Settings,
        model: OnnxModel,
        live: LiveSettings,
        queues: StageQueues,
        requests: PendingRequests,
        results: ResultMaker,
        counters: FrameCounters,
        finisher: Finisher,
        metrics: MetricsRegistry,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("dispatch", supervisor, daemon=False)
        self.settings = settings
        self.model = model
        self.live = live
        self.queues = queues
        self.requests = requests
        self.results = results
        self.counters = counters
        self.finisher = finisher
        self.metrics = metrics
        self._class_ids = {name: i for i, name in enumerate(model.class_names)}

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

    def _keep_ids(self, live: TwinSettings) -> frozenset[int] | None:
        if not live.classes:
            return None
        return frozenset(self._class_ids[name] for name in live.classes if name in self._class_ids)

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
        request = self.requests.take(job) if job.source == "http" else None
        try:
            result = self._postprocess(done, live, request)
        except Exception as exc:  # this frame's output cannot be read: it fails alone
            log.error("%s: postprocessing failed", shown(job.rel_path), exc_info=exc)
            error = FrameError(FrameError.POSTPROCESS_FAILED, f"postprocessing failed: {type(exc).__name__}: {exc}")
            result = self.results.make(job, None, error=error, timings=done.timings_ms, live=live)
        if request is not None:
            self.counters.answered(result)
            request.future.set_result(result)
            return None
        if job.source == "http":
            return None  # a request given up (timed out) while in flight: nobody waits for its answer
        return Finished(job, item, result, live)

    def _postprocess(self, done: Inferred, live: TwinSettings, request: Request | None) -> FrameResult:
        item = done.item
        if isinstance(item, Failed):
            return self.results.make(item.job, None, error=item.error, timings=done.timings_ms, live=live)
        t0 = time.monotonic()
        confidence = request.confidence if request and request.confidence is not None else live.confidence_threshold
        options = postprocess.DecodeOptions(
            confidence=confidence,
            iou=live.iou_threshold,
            max_detections=live.max_detections,
            agnostic=self.settings.agnostic_nms,
            keep_class_ids=self._keep_ids(live),
            class_thresholds=tuple(
                (self._class_ids[name], threshold)
                for name, threshold in live.class_thresholds
                if name in self._class_ids
            ),
        )
        if done.output is None:
            raise ValueError("no model output for this frame")
        decoded = frame_views.read(
            self.model.decoder, (done.output, *done.tile_outputs), item.views, options, live.profile, item.size
        )
        timings = {**done.timings_ms, "postprocess": (time.monotonic() - t0) * 1000}
        result = self.results.make(
            item.job,
            item,
            detections=decoded.detections,
            classification=decoded.classification,
            timings=timings,
            live=live,
        )
        if request is not None and request.confidence is not None:
            result = replace(result, confidence_threshold=request.confidence)
        return result
