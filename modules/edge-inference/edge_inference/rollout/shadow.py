"""The candidate shadow: a second model run on a sample of live frames, on spare capacity only, and compared.

    dispatcher --offer(frame)--> ShadowInbox (sampled; SHADOW_QUEUE frames, full: the oldest is dropped)
      --> `candidate` thread (CandidateShadow): waits until the pipeline is idle (no frame waiting or being
    decoded, no batch running), runs the candidate on the active model's prepared tensor (refitted to the
    candidate's input), and compares its detections with the active model's (agreement.py), judged by the same
    live settings (the frame's camera profile's, class thresholds included). Frames a camera profile cut in
    views (an ROI, tiles: pipeline/dispatch.py `judged_whole`) are never offered: their detections are a merge
    of several tensors, not one the candidate could run

Spare capacity only: the thread runs at the lowest CPU priority, the candidate's session has one thread, and a
frame that waits more than SHADOW_MAX_AGE_S for an idle moment is skipped: under a saturating load the candidate
is starved (`framesSkipped` grows) and the active model is never made to wait. Frames are sampled by their id
(`sampleRate`: the same frames on every replica and after a restart). Nothing of the candidate is written to
results/ or sent as a frame's telemetry.

Every interval (the twin's `telemetry.summaryIntervalSeconds`) and when it ends (`maxMinutes`, a new candidate,
null, promotion) the evaluation is sent on the `modelEvaluation` output and kept for the rollout to report
(`take_reports`: the twin's reported `candidate.stats`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_inference.entities import SCHEMA_VERSION, Detection, Letterbox, utc_now_iso
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.telemetry import MODEL_EVALUATION_OUTPUT, OutgoingMessage, TelemetrySink, routing_properties
from edge_inference.rollout.agreement import Agreement
from edge_inference.settings import Settings
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.preprocess import InputTransform
from edge_inference.vision.serving import decode, decode_options, run_one
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

SHADOW_QUEUE = 4
SHADOW_MAX_AGE_S = 5.0
IDLE_POLL_S = 0.01
LOWEST_PRIORITY = 19

Idle = Callable[[], bool]


@dataclass(frozen=True)
class ShadowFrame:
    """A frame the active model has judged, offered to the candidate."""

    frame_id: str
    tensor: np.ndarray
    letterbox: Letterbox
    transform: InputTransform | None  # what made `tensor` (the candidate's input is made again from it)
    active: tuple[Detection, ...]
    active_ms: float
    live: TwinSettings
    offered_at: float = field(default_factory=time.monotonic)


@dataclass
class _Evaluation:
    model: OnnxModel
    shown: dict[str, Any]  # the candidate as reported (no URL query)
    active: dict[str, str]  # the active model it is compared with
    sample_rate: float
    ends_at: float | None  # time.time() when maxMinutes is over
    started_at: str = field(default_factory=utc_now_iso)
    agreement: Agreement = field(default_factory=Agreement)
    failed: int = 0
    sent: int = 0


def sampled(frame_id: str, rate: float) -> bool:
    """Deterministic sampling by frame id: the same frames are chosen everywhere."""
    try:
        return int(frame_id[:8], 16) / 0xFFFFFFFF < rate
    except ValueError:
        return False


class ShadowInbox:
    """Where the dispatcher offers judged frames: sampled by frame id, bounded, never blocking."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.frames: deque[ShadowFrame] = deque()
        self.rate = 0.0  # 0: no candidate, nothing is taken
        self.sampled = 0
        self.skipped = 0

    def open(self, rate: float) -> None:
        with self.lock:
            self.rate, self.sampled, self.skipped = rate, 0, 0
            self.frames.clear()

    def close(self) -> None:
        self.open(0.0)

    def offer(self, frame: ShadowFrame) -> None:
        rate = self.rate
        if not rate or not sampled(frame.frame_id, rate):
            return
        with self.lock:
            self.sampled += 1
            if len(self.frames) >= SHADOW_QUEUE:
                self.frames.popleft()
                self.skipped += 1
            self.frames.append(frame)
            self.ready.notify()

    def take(self, timeout: float) -> ShadowFrame | None:
        with self.lock:
            if not self.frames:
                self.ready.wait(timeout)
            return self.frames.popleft() if self.frames else None

    def skip(self) -> None:
        with self.lock:
            self.skipped += 1


class CandidateShadow(Worker):
    """The `candidate` thread (a daemon: it writes nothing that must finish)."""

    def __init__(
        self,
        settings: Settings,
        inbox: ShadowInbox,
        idle: Idle,
        sink: TelemetrySink,
        live: LiveSettings,
        supervisor: Supervisor | None = None,
        *,
        max_age_s: float = SHADOW_MAX_AGE_S,
    ) -> None:
        super().__init__("candidate", supervisor, daemon=True)
        self.settings = settings
        self.inbox = inbox
        self.idle = idle
        self.sink = sink
        self.live = live
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._eval: _Evaluation | None = None
        self._reports: deque[dict[str, Any]] = deque(maxlen=8)
        self._next_report = 0.0

    # -- the rollout's side -----------------------------------------------------------------------------------
    def begin(
        self, model: OnnxModel, shown: dict[str, Any], active: OnnxModel, sample_rate: float, minutes: float | None
    ) -> None:
        """Evaluate `model` from now on (a candidate before it is ended with a last report)."""
        self.end("a new candidate replaces it")
        ends_at = time.time() + minutes * 60 if minutes else None
        with self._lock:
            self._eval = _Evaluation(model, shown, active.describe(), sample_rate, ends_at)
            self._next_report = time.monotonic() + self._interval()
        self.inbox.open(sample_rate)
        log.info("candidate %s %s evaluated on %.0f%% of the frames", model.name, model.version, sample_rate * 100)

    def end(self, reason: str) -> dict[str, Any] | None:
        """Stop evaluating; the last report is sent and returned (None when no candidate was evaluated)."""
        with self._lock:
            evaluation, self._eval = self._eval, None
        if evaluation is None:
            return None
        stats = self._publish(evaluation, ended=reason)
        self.inbox.close()
        log.info("candidate %s evaluation ended (%s)", evaluation.shown.get("name"), reason)
        return stats

    @property
    def model(self) -> OnnxModel | None:
        evaluation = self._eval
        return evaluation.model if evaluation else None

    def stats(self) -> dict[str, Any] | None:
        with self._lock:
            evaluation = self._eval
            return self._stats(evaluation) if evaluation else None

    def take_reports(self) -> list[dict[str, Any]]:
        """The evaluations sent since the last call (the rollout reports the last one in the twin)."""
        with self._lock:
            reports = list(self._reports)
            self._reports.clear()
        return reports

    # -- the thread -----------------------------------------------------------------------------------------
    def setup(self) -> bool:
        with contextlib.suppress(OSError, AttributeError):  # spare capacity only: the lowest CPU priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        return True

    def wake(self) -> None:
        with self.inbox.lock:
            self.inbox.ready.notify_all()

    def run(self) -> None:
        while not self.stopping:
            frame = self.inbox.take(0.2)
            evaluation = self._eval
            if evaluation is None:
                continue
            if frame is not None:
                self._compare(evaluation, frame)
            self._maybe_report(evaluation)

    def _compare(self, evaluation: _Evaluation, frame: ShadowFrame) -> None:
        while not self.idle():  # the active model's work first
            if time.monotonic() - frame.offered_at > self.max_age_s or self.stopping or self._eval is not evaluation:
                self.inbox.skip()
                return
            time.sleep(IDLE_POLL_S)
        model = evaluation.model
        options = decode_options(model, frame.live, agnostic=self.settings.agnostic_nms)
        t0 = time.monotonic()
        try:
            output, box = run_one(model, frame.tensor, frame.letterbox, frame.transform)
            found = decode(model, output, box, options).detections
        except Exception as exc:  # the candidate fails a frame: counted, never the active model's business
            log.warning("candidate %s failed a frame: %s", model.name, str(exc)[:200])
            evaluation.failed += 1
            return
        elapsed = (time.monotonic() - t0) * 1000
        with self._lock:
            evaluation.agreement.add(frame.active, found, frame.active_ms, elapsed)

    def _maybe_report(self, evaluation: _Evaluation) -> None:
        if evaluation.ends_at is not None and time.time() >= evaluation.ends_at:
            with self._lock:
                ended = self._eval is evaluation
            if ended:
                self.end("maxMinutes reached")
            return
        if time.monotonic() >= self._next_report:
            self._next_report = time.monotonic() + self._interval()
            self._publish(evaluation)

    def _interval(self) -> float:
        return float(self.live.current().telemetry.summary_interval_seconds)

    def _stats(self, evaluation: _Evaluation, ended: str | None = None) -> dict[str, Any]:
        return {
            "state": "ended" if ended else "evaluating",
            "endedBecause": ended,
            "since": evaluation.started_at,
            "at": utc_now_iso(),
            "activeModel": evaluation.active,
            "candidateModel": {k: evaluation.shown[k] for k in ("name", "version", "sha256")},
            "sampleRate": evaluation.sample_rate,
            "framesSampled": self.inbox.sampled,
            "framesSkipped": self.inbox.skipped,
            "framesFailed": evaluation.failed,
            **evaluation.agreement.report(),
        }

    def _publish(self, evaluation: _Evaluation, ended: str | None = None) -> dict[str, Any]:
        """Send the evaluation on `modelEvaluation`; returns it (the reported stats)."""
        with self._lock:
            stats = self._stats(evaluation, ended)
            evaluation.sent += 1
            number = evaluation.sent
            self._reports.append(stats)
        message_id = f"evaluation-{evaluation.shown['sha256'][:16]}-{evaluation.started_at}-{number}"
        properties = routing_properties("evaluation", stats["perClass"], 0, 0.0, "info")
        properties["agreement"] = "" if stats["agreement"] is None else f"{stats['agreement']:g}"
        try:
            self.sink.publish(
                OutgoingMessage(
                    MODEL_EVALUATION_OUTPUT, message_id, {"schemaVersion": SCHEMA_VERSION, **stats}, properties
                )
            )
        except Exception:
            log.exception("telemetry sink failed; model evaluation %s lost", message_id)
        return stats
