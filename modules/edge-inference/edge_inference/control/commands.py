"""What the front ends may ask of the running module: `ModuleCommands` (the `ModuleControl` of direct methods and
the `Predictor` of the REST API).

    getStatus   status()        counters, queues, in flight, pause reasons, provider, model, live settings
    pause       pause()         the `paused` reason of the intake gate (pipeline/gate.py); `resume()` lifts it
    reprocess   reprocess(p)    finished frames matching a path or glob, taken back (archive) or noted again
                                (keep); control/reprocess.py
    selfTest    self_test()     a frame with known defects through the real model path (control/selftest.py)
    getModels   models()        the active model, the candidate, rollback targets, the cache (rollout/controller.py)
    rollbackModel / promoteCandidate  rollback_model(), promote_candidate(): jobs of the model rollout
    fileEvents  enqueue_path()  one file of the input share, handed to the watcher (de-duplicated there)
    /predict    predict()       pipeline/predict.py; /ready: readiness(); /health: active_provider()

The twin's reported `stats` and `runtime` come from here too (`runtime_report`: also what the rollout reports
after a swap). The serving model is read from vision/serving.py's `ModelSlot` at each call.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from typing import Any

from edge_inference import __version__
from edge_inference.control.reprocess import FrameReprocessor
from edge_inference.control.selftest import SelfTest
from edge_inference.entities import FrameResult
from edge_inference.names import shown
from edge_inference.ops.alarms import AlarmRegistry
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.ops.progress import ProgressMonitor
from edge_inference.pipeline.gate import PAUSED
from edge_inference.pipeline.runner import Pipeline
from edge_inference.rollout.controller import ModelRollout
from edge_inference.settings import Settings
from edge_inference.share import share_fs
from edge_inference.share.claims import safe_join
from edge_inference.share.watcher import FrameWatcher, is_frame_name
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.serving import ModelSlot
from edge_inference.workers import Supervisor

log = logging.getLogger(__name__)

RUNTIME_PACKAGES = ("onnxruntime-gpu", "numpy", "opencv-python-headless", "azure-iot-device")
STATS_KEYS = ("frames", "inFlight", "queues", "lastResultAt", "uptimeSeconds", "intakeBlocked")


def runtime_report(model: OnnxModel, rollout: dict[str, Any]) -> dict[str, Any]:
    """The twin's reported `runtime`: the serving model (`runtime.model`, with the rollout's state under
    `rollout`), providers, input, classes, module and package versions."""
    packages = {}
    for name in RUNTIME_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    info = model.runtime_info()
    info["model"] = {**info["model"], "rollout": rollout}
    return {**info, "moduleVersion": __version__, "packages": packages}


class ModuleCommands:
    """The running module as its front ends see it."""

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        live: LiveSettings,
        pipeline: Pipeline,
        watcher: FrameWatcher,
        progress: ProgressMonitor,
        alarms: AlarmRegistry,
        supervisor: Supervisor,
        rollout: ModelRollout,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.rollout = rollout
        self.live = live
        self.pipeline = pipeline
        self.watcher = watcher
        self.progress = progress
        self.alarms = alarms
        self.supervisor = supervisor
        self.selftest = SelfTest(pipeline.predictions.predict, lambda: slot.active)
        self.reprocessor = FrameReprocessor(settings, pipeline, watcher)
        self.started_at = time.time()

    # -- Predictor (HTTP) ---------------------------------------------------------------------------------------
    def predict(self, data: bytes, *, confidence: float | None = None, timeout: float = 30.0) -> FrameResult:
        return self.pipeline.predictions.predict(data, confidence=confidence, timeout=timeout)

    def readiness(self) -> tuple[bool, str]:
        death = self.pipeline.stage_death()
        if death:
            return False, f"a pipeline stage died: {death}"
        death = self.supervisor.describe_death()
        if death:
            return False, death
        if not self.pipeline.running:
            return False, "the pipeline is not running"
        if not self.watcher.alive():
            return False, "the input watcher is not running"
        model = self.slot.active
        if self.settings.require_gpu and not model.on_gpu:
            return False, f"REQUIRE_GPU=true and the active provider is {model.provider}"
        return True, "ready"

    def active_provider(self) -> str:
        return str(self.slot.active.provider)

    # -- ModuleControl (direct methods) -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        gate = self.pipeline.gate
        model = self.slot.active
        return {
            "ready": self.readiness()[0],
            "paused": gate.paused,
            "intakeBlocked": gate.blocked,
            "provider": model.provider,
            "model": model.describe(),
            "rollout": self.rollout.record.state(),
            "settings": self.live.current().as_twin(),
            "frames": self.pipeline.counters.snapshot(),
            "inFlight": gate.in_flight_count,
            "queues": self.pipeline.queues.depths(),
            "ledger": self.pipeline.ledger.counts(),
            "lastResultAt": self.pipeline.counters.last_result_at,
            "backlog": self.progress.latest.as_status(),
            "uptimeSeconds": round(time.time() - self.started_at, 1),
        }

    def pause(self) -> None:
        self.pipeline.gate.block(PAUSED, "paused by direct method or twin")

    def resume(self) -> None:
        self.pipeline.gate.unblock(PAUSED)

    def reprocess(self, pattern: str) -> int:
        return self.reprocessor.reprocess(pattern)

    def enqueue_path(self, rel_path: str, source: str) -> bool:
        path = safe_join(self.settings.input_dir, rel_path)  # raises ValueError when it escapes
        if not is_frame_name(path.name) or self.pipeline.gate.in_flight(rel_path):
            return False
        try:
            share_fs.lstat(self.settings.input_dir, rel_path)  # a symlinked folder on the way is never followed
        except share_fs.OutsideShare as exc:
            log.warning("%s: not taking %s: %s", source, shown(rel_path), exc.strerror)
            return False
        except OSError:
            return False
        return self.watcher.note(str(path), source="fileEvent")

    def self_test(self) -> dict[str, Any]:
        return self.selftest.run()

    def models(self) -> dict[str, Any]:
        return self.rollout.models()

    def rollback_model(self) -> tuple[int, dict[str, Any]]:
        return self.rollout.run_job("rollback")

    def promote_candidate(self) -> tuple[int, dict[str, Any]]:
        return self.rollout.run_job("promote")

    # -- the twin's reported properties -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        status = self.status()
        return {**{k: status[k] for k in STATS_KEYS}, "alarms": self.alarms.active()}

    def runtime_info(self) -> dict[str, Any]:
        return runtime_report(self.slot.active, self.rollout.record.lane("model"))
