"""The frame pipeline, put together: its queues, its stages, and their start and stop.

    watcher --offer--> intake.py (claim, ledger) --FrameJob--> frames queue (QUEUE_SIZE)
      --> prepare.py: decode/letterbox workers --PreparedFrame--> prepared queue   <-- predict.py (/predict)
      --> batcher.py: batches up to BATCH_SIZE / BATCH_MAX_WAIT_MS, the model --Inferred--> inferred queue
      --> dispatch.py: postprocess with the live settings; /predict answered
      --> finish.py: result files (atomic; the mark of a done frame) -> telemetry -> ledger -> disposition
    housekeeping.py: share watch, claims, ledger and output retention (gate.py: pause reasons, frames in flight)
    review.py: frames chosen for review/ copied as they finish (share/review.py writes them)
The model that serves is vision/serving.py's `ModelSlot` (swapped by the model rollout between two batches);
share frames the active model judged are offered to the candidate shadow (`shadow`, rollout/shadow.py), which
runs only while the pipeline is `idle()`.

The stages meet only at the queues and the frozen envelopes of envelopes.py. Per-frame errors stay per-frame
by construction: any exception while preparing, inferring, postprocessing or writing one frame fails that frame
with a code and a reason (an error result, the file to failed/), never the stage; each start of a share frame is
counted in the ledger first, and a frame that keeps dying is quarantined (quarantine.py). What still escapes a
stage (the ledger's database failing, the model failing batch after batch, a lost GPU) kills it: it reports to
the supervisor (workers.py), and the composition root stops the module with a non-zero exit so IoT Edge restarts
it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2

from edge_inference.errors import ShareError, UnavailableError
from edge_inference.names import shown
from edge_inference.ops.alarms import AlarmRegistry
from edge_inference.ops.health import FailureRunMonitor
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.batcher import Batcher
from edge_inference.pipeline.decode_pool import DecodeSlots
from edge_inference.pipeline.dispatch import Dispatcher
from edge_inference.pipeline.envelopes import StageQueues
from edge_inference.pipeline.finish import Finisher, ResultListener
from edge_inference.pipeline.gate import IntakeGate
from edge_inference.pipeline.housekeeping import Housekeeping
from edge_inference.pipeline.intake import Intake
from edge_inference.pipeline.outcomes import FrameCounters, ResultMaker
from edge_inference.pipeline.predict import PendingRequests, Predictions
from edge_inference.pipeline.prepare import FramePreparer, PrepareWorker
from edge_inference.pipeline.quarantine import FrameAttempts
from edge_inference.pipeline.review import ReviewSelector
from edge_inference.rollout.shadow import ShadowInbox
from edge_inference.settings import Settings
from edge_inference.share import share_fs
from edge_inference.share.arrivals import ArrivingFrames
from edge_inference.share.catalog import OutputCatalog
from edge_inference.share.claims import ClaimArea
from edge_inference.share.guard import ShareGuard
from edge_inference.share.ledger import Ledger
from edge_inference.share.mounts import settle_window
from edge_inference.share.results import ResultWriter
from edge_inference.share.retention import OutputRetention, TelemetryFile
from edge_inference.share.review import ReviewWriter
from edge_inference.vision.serving import ModelSlot
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

REPEATED_FAILURES_AFTER = 10  # frames failed in a row before the repeatedFailures alarm


class Pipeline:
    """Builds the stages in order, each given what it needs; starts them, drains and stops them."""

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        live: LiveSettings,
        ledger: Ledger,
        claims: ClaimArea,
        writer: ResultWriter,
        catalog: OutputCatalog,
        metrics: MetricsRegistry,
        alarms: AlarmRegistry,
        telemetry: ResultListener,
        supervisor: Supervisor,
        *,
        shadow: ShadowInbox | None = None,
        telemetry_tick: Callable[[], None] = lambda: None,
        telemetry_file: TelemetryFile | None = None,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.shadow = shadow or ShadowInbox()
        self.ledger = ledger
        self.claims = claims
        self.max_batch = slot.active.serving_batch  # queue sizes, from the model the module starts on
        self._stopping = threading.Event()  # set once the drain is over: the stages stop
        self.queues = StageQueues(settings.queue_size, self.max_batch)
        self.gate = IntakeGate(metrics, alarms, live)
        self.guard = ShareGuard(settings.input_dir, settings.output_dir, settings.min_free_mb, claims)
        self.results = ResultMaker(slot, live, ledger.generations())
        self.counters = FrameCounters(metrics)
        self.failures = FailureRunMonitor(REPEATED_FAILURES_AFTER, alarms)
        self.attempts = FrameAttempts(ledger, settings.max_frame_attempts)
        settle, trust_mtime = settle_window(settings.input_dir, settings.settle_seconds)
        self.arrivals = ArrivingFrames(
            settings.truncated_grace_seconds, settle, trust_mtime, lambda rel: share_fs.lstat(*claims.location(rel))
        )
        self.review = ReviewSelector(
            ReviewWriter(settings.output_dir, catalog, lambda: slot.active.class_names), claims, catalog, metrics
        )
        self.finisher = Finisher(
            writer,
            ledger,
            claims,
            self.gate,
            self.guard,
            telemetry,
            self.results,
            self.counters,
            self.failures,
            self.attempts,
            self.arrivals,
            metrics,
            catalog,
            self.review,
        )
        self.retention = OutputRetention(
            settings.output_dir,
            catalog,
            self.guard,
            settings.output_retention_days,
            settings.output_max_gb,
            alarms,
            metrics,
            telemetry_file,
        )
        self.intake = Intake(claims, ledger, self.gate, self.guard, self.queues, self.finisher, self.arrivals, metrics)
        self.preparer = FramePreparer(settings, slot, live, self.guard, self.attempts, self._stopping)
        self.requests = PendingRequests()
        self.predictions = Predictions(self.preparer, self.queues, self.requests)
        workers = settings.effective_decode_workers()
        model = slot.active  # a rolled-out model runs on the same providers: CPU or GPU stays as at start
        self.decode_slots = DecodeSlots(
            workers,
            adaptive=settings.decode_workers == 0,
            model_cost_ms=lambda: slot.active.frame_cost_ms,
            initial=workers if model.on_gpu else 1,
            model_on_cpu=not model.on_gpu,
        )
        self.stages: list[Worker] = [
            PrepareWorker(i, self.preparer, self.queues, self.decode_slots, supervisor) for i in range(workers)
        ]
        self.batcher = Batcher(settings, slot, self.queues, self.preparer, metrics, supervisor)
        self.stages += [
            self.batcher,
            Dispatcher(
                settings,
                slot,
                live,
                self.queues,
                self.requests,
                self.results,
                self.counters,
                self.finisher,
                metrics,
                self.shadow,
                supervisor,
            ),
        ]
        self.housekeeping = Housekeeping(
            settings,
            claims,
            ledger,
            self.gate,
            self.guard,
            self.intake,
            self.arrivals,
            self.results,
            self.retention,
            telemetry_tick,
            supervisor,
        )
        self.stages.append(self.housekeeping)

    def start(self) -> None:
        # The decode pool is the parallelism: OpenCV's own thread pool inside each call would oversubscribe.
        cv2.setNumThreads(1)
        try:
            self.claims.prepare()
        except OSError as exc:  # e.g. `.edge-inference` is a plain file on the share: one sentence, no traceback
            raise ShareError(
                f"cannot make the claim area {shown(str(self.claims.own))} on the input share ({exc.strerror}):"
                " is `.edge-inference` on the share a plain file, or the share read-only? remove or rename it, or"
                " set INPUT_DISPOSITION=keep for a read-only share"
            ) from None
        for stage in self.stages:
            stage.start()
        self.intake.reconcile_claims()
        self.predictions.open()
        slots = self.decode_slots
        log.info(
            "pipeline started: %d decode workers (%s), batch up to %d",
            slots.workers,
            f"{slots.limit} at a time to start, then as many as keep the model busy" if slots.adaptive else "fixed",
            self.max_batch,
        )

    @property
    def running(self) -> bool:
        return self.predictions.is_open

    def idle(self) -> bool:
        """No frame waits for decoding or inference, none is being decoded, no batch runs: spare capacity (the
        candidate shadow runs only then)."""
        q = self.queues
        return q.frames.empty() and q.prepared.empty() and not self.preparer.busy and not self.batcher.busy

    def stage_death(self) -> str:
        """`<stage>: <error>` for the first stage that died, or ""."""
        for stage in self.stages:
            if stage.error is not None:
                return f"{stage.name}: {stage.error}"
        return ""

    def stop(self, deadline: float) -> bool:
        """Drain within `deadline` (time.monotonic()): finish what was taken, take nothing new.

        Returns True when everything in flight finished; frames still claimed are recovered at restart."""
        self.gate.close()
        self.predictions.close()
        drained = False
        while time.monotonic() < deadline and not self.stage_death():
            if not self.gate.in_flight_count and not len(self.requests) and self.queues.empty():
                drained = True
                break
            time.sleep(0.02)
        self._stopping.set()
        for stage in self.stages:
            stage.request_stop()
        for stage in self.stages:
            stage.join(max(0.1, deadline - time.monotonic()))
        self.requests.fail_all(UnavailableError("the module is shutting down", 5.0))
        if not drained:
            log.warning(
                "shutdown deadline reached with %d frames in flight; they resume at restart", self.gate.in_flight_count
            )
        return drained
