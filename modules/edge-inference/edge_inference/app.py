"""The composition root: builds every part of the module, wires them, runs, and shuts down in order.

Start order: settings -> model (checked, warmed) -> state (ledger, claims) -> telemetry (IoT Edge client
with its durable outbox, or the local sink) -> pipeline -> HTTP and metrics -> twin applied -> watcher.
Stop order is the reverse, within SHUTDOWN_TIMEOUT_SECONDS: the watcher stops taking frames, the pipeline
drains what it took, HTTP closes, telemetry flushes, the IoT client drains its outbox and disconnects.
Exit codes: 0 after SIGTERM/SIGINT, 1 when a stage died (IoT Edge restarts the module), 2 on bad
settings or a model that cannot be served (REQUIRE_GPU without a working GPU included: at start, or when the
GPU fails under the running session; `gpuLost` is raised first).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

from edge_inference import __version__, tempfiles
from edge_inference.claims import ClaimArea
from edge_inference.control import TelemetrySink
from edge_inference.errors import EdgeInferenceError, GpuError, ModelError, ProviderError, SettingsError
from edge_inference.health import GPU_LOST
from edge_inference.ledger import Ledger
from edge_inference.live_settings import LiveSettings, TwinSettings
from edge_inference.log import setup_logging
from edge_inference.metrics import MetricsRegistry
from edge_inference.model import OnnxModel
from edge_inference.pipeline import Pipeline
from edge_inference.results import ResultWriter
from edge_inference.settings import Settings, iot_edge_environment, read_settings
from edge_inference.watcher import FrameWatcher

log = logging.getLogger("edge_inference")

EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2
# intake pauses the pipeline raises when a share stops answering -> the health alarm sent on `alerts`
SHARE_ALARMS = {"inputUnavailable": "inputShareUnavailable", "outputError": "outputShareUnavailable"}
CRITICAL_ALARMS = frozenset({GPU_LOST, "outputShareLow", "inputShareUnavailable", "outputShareUnavailable"})


class Module:
    """One running edge-inference module."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.env = os.environ if env is None else env
        self.stop_event = threading.Event()
        self.metrics = MetricsRegistry()
        self.live = LiveSettings(TwinSettings.from_boot(settings))
        self._closers: list[tuple[str, Any]] = []
        self.iot: Any = None
        self.http: Any = None
        self.metrics_server: Any = None
        self.monitors: list[Any] = []
        self.watcher: FrameWatcher | None = None
        self.pipeline: Pipeline | None = None

    # -- build ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        for folder in (s.output_dir, s.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        tempfiles.set_tag(s.replica_id)
        removed = tempfiles.remove_stale(s.output_dir, s.replica_id)
        if removed:
            log.info("removed %d temp files left by an earlier run", removed)
        model = OnnxModel(s)
        self.metrics.provider.info({"provider": model.provider})
        self.metrics.model.info({"name": model.name, "version": model.version, "sha256": model.sha256})
        ledger = Ledger(s.state_dir / "ledger.sqlite")
        claims = ClaimArea(s.input_dir, s.output_dir, s.replica_id, s.input_disposition, s.claim_stale_seconds)
        writer = ResultWriter(s.output_dir)

        from edge_inference.health import DiskSpaceMonitor, FailureRunMonitor, GpuMonitor
        from edge_inference.telemetry import GroupedSink, LocalTelemetrySink, TelemetryPublisher

        sink: TelemetrySink | None = None
        pipeline_ref: dict[str, Pipeline] = {}
        if iot_edge_environment(self.env):
            from edge_inference.iot.client import IoTEdgeClient

            self.iot = IoTEdgeClient(
                s,
                self.live,
                _LateControl(pipeline_ref),
                self.metrics,
                runtime_info=lambda: self._runtime_info(model),
                stats=lambda: self._stats(),
            )
            sink = self.iot.sink
        elif s.local_telemetry != "false":
            sink = LocalTelemetrySink(s.output_dir)
        grouped = GroupedSink(sink if sink is not None else _NullSink())
        self.publisher = TelemetryPublisher(grouped, self.live, self.metrics)
        if self.iot is not None:
            self.iot.publisher_alarm = self.publisher.alarm  # outbox overflow raises an alarm
        if model.gpu_fault is not None:  # a GPU provider failed at start: the module runs on what came next
            self._alarm(GPU_LOST, True, {"phase": "start", "error": model.gpu_fault, "provider": model.provider})
        failures = FailureRunMonitor(10, self._alarm)
        pipeline = Pipeline(
            s,
            model,
            self.live,
            ledger,
            claims,
            writer,
            self.metrics,
            self.publisher,
            failures.record,
            telemetry_group=grouped.group,
        )
        pipeline_ref["pipeline"] = pipeline
        self.pipeline = pipeline
        self._closers.append(("ledger", ledger))
        self.live.subscribe(self._on_live_change)

        self._start_servers(pipeline)
        if self.iot is not None:
            self.iot.start(timeout=s.iot_timeout_seconds)  # the twin is applied before the first frame
        self._on_live_change(TwinSettings(), self.live.current())
        pipeline.start()
        self.watcher = FrameWatcher(
            s.input_dir,
            pipeline.offer,
            mode=s.watch_mode,
            settle_seconds=s.settle_seconds,
            poll_interval=s.poll_interval_seconds,
            rescan_interval=s.rescan_interval_seconds,
        )
        watcher = self.watcher
        pipeline.note_path = lambda path: watcher.note(path, source="fileEvent")
        pipeline.watcher_alive = watcher.alive
        pipeline.on_intake_change = self._on_intake_change
        watcher.start()
        volumes = {"output": s.output_dir, "state": s.state_dir}
        self.monitors = [
            DiskSpaceMonitor(volumes, int(s.min_free_mb * 1024 * 1024), self.metrics, self._on_disk_alarm),
            GpuMonitor(s.cuda_device_id, self.metrics, self._alarm, pci_bus_id=model.pci_bus_id)
            if model.on_gpu
            else None,
        ]
        self.monitors = [m for m in self.monitors if m is not None]
        for monitor in self.monitors:
            monitor.start()
        log.info(
            "edge-inference %s ready (%s, %s)", __version__, model.provider, "IoT Edge" if self.iot else "local mode"
        )

    def _start_servers(self, pipeline: Pipeline) -> None:
        s = self.settings
        if s.http_port:
            from edge_inference.http_api import build_http_server

            self.http = build_http_server(pipeline, self.metrics, s)
            self.http.start()
        if s.metrics_port:
            from edge_inference.http_server import ConnectionLimits
            from edge_inference.metrics_server import MetricsServer

            self.metrics_server = MetricsServer(
                self.metrics.registry, s.metrics_port, s.http_host, ConnectionLimits.from_settings(s)
            )
            self.metrics_server.start()

    # -- events ---------------------------------------------------------------------------------------------
    def _on_live_change(self, old: TwinSettings, new: TwinSettings) -> None:
        if self.pipeline is not None:
            self.pipeline.set_intake_blocked("twinPaused", new.paused, "paused by the module twin")

    def _on_intake_change(self, reason: str, blocked: bool, message: str) -> None:
        """A share that stops answering pauses intake in the pipeline; the operator hears of it on `alerts`."""
        alarm = SHARE_ALARMS.get(reason)
        if alarm is not None:
            self.metrics.alarms.labels(alarm=alarm).set(1 if blocked else 0)
            self._alarm(alarm, blocked, {"reason": message})

    def _alarm(self, name: str, active: bool, details: dict[str, Any] | None = None) -> None:
        severity = "critical" if name in CRITICAL_ALARMS else "warning"
        message = f"{name} {'raised' if active else 'cleared'}"
        self.publisher.alarm(name, message, severity, active, details)

    def _on_disk_alarm(self, name: str, active: bool, details: dict[str, Any]) -> None:
        if self.pipeline is not None:
            self.pipeline.set_intake_blocked(name, active, f"{name}: {details}")
        self._alarm(name, active, details)

    def _runtime_info(self, model: OnnxModel) -> dict[str, Any]:
        import importlib.metadata as md

        packages = {}
        for name in ("onnxruntime-gpu", "numpy", "opencv-python-headless", "azure-iot-device"):
            try:
                packages[name] = md.version(name)
            except md.PackageNotFoundError:
                continue
        return {**model.runtime_info(), "moduleVersion": __version__, "packages": packages}

    def _stats(self) -> dict[str, Any]:
        if self.pipeline is None:
            return {}
        status = self.pipeline.status()
        keys = ("frames", "inFlight", "queues", "lastResultAt", "uptimeSeconds", "intakeBlocked")
        return {**{k: status[k] for k in keys}, "alarms": self.publisher.active_alarms()}

    # -- run / stop -----------------------------------------------------------------------------------------
    def wait(self) -> int:
        """Block until asked to stop or a stage dies; then shut down. Returns the exit code."""
        assert self.pipeline is not None and self.watcher is not None
        while not self.stop_event.wait(0.5):
            if self.pipeline.fatal_event.is_set():
                return self._stop_after(self.pipeline.fatal)
            if self.watcher.error is not None:
                log.error("stopping: the watcher died: %s", self.watcher.error)
                self.shutdown()
                return EXIT_FATAL
        self.shutdown()
        return EXIT_OK

    def _stop_after(self, fatal: BaseException | None) -> int:
        """A stage died. A GPU that failed under the running session is reported (`gpuLost`) and, with
        REQUIRE_GPU, ends the module with exit 2 and one sentence (the restart would only find it gone again)."""
        if isinstance(fatal, GpuError):
            self._alarm(GPU_LOST, True, {"phase": "inference", "error": str(fatal), "provider": self._provider()})
            log.error("stopping: %s; frames in flight stay claimed and are taken again at restart", fatal)
            self.shutdown()
            return EXIT_CONFIG if self.settings.require_gpu else EXIT_FATAL
        log.error("stopping: a pipeline stage died: %s", fatal)
        self.shutdown()
        return EXIT_FATAL

    def _provider(self) -> str:
        return self.pipeline.active_provider() if self.pipeline is not None else ""

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if signum is not None:
            log.info("signal %s received: draining", signal.Signals(signum).name)
        self.stop_event.set()

    def shutdown(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
        if self.watcher is not None:
            self.watcher.stop(timeout=2.0)
        for monitor in self.monitors:
            monitor.stop()
        drained = self.pipeline.stop(deadline) if self.pipeline is not None else True
        if self.http is not None:
            self.http.stop(timeout=2.0)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.publisher.close()
        if self.iot is not None:
            self.iot.stop(timeout=max(1.0, deadline - time.monotonic()))
        for _name, closable in self._closers:
            closable.close()
        log.info("stopped (%s)", "drained" if drained else "deadline reached; unfinished frames resume at restart")


class _LateControl:
    """ModuleControl for the IoT client, which is built before the pipeline it controls."""

    def __init__(self, ref: dict[str, Pipeline]) -> None:
        self._ref = ref

    def __getattr__(self, name: str) -> Any:
        pipeline = self._ref.get("pipeline")
        if pipeline is None:
            raise EdgeInferenceError("the pipeline is not built yet")
        return getattr(pipeline, name)


class _NullSink:
    def publish(self, message: Any) -> None:
        return None

    def close(self) -> None:
        return None


def main(env: Mapping[str, str] | None = None) -> int:
    """`python -m edge_inference`: read settings, run until SIGTERM, exit with a meaningful code."""
    in_iot_edge = iot_edge_environment(env)
    try:
        settings = read_settings(env)
    except SettingsError as exc:
        setup_logging("INFO", "iotedge" if in_iot_edge else "text")
        log.error("invalid setting: %s", exc)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.effective_log_format(in_iot_edge))
    module = Module(settings, env)
    signal.signal(signal.SIGTERM, module.request_stop)
    signal.signal(signal.SIGINT, module.request_stop)
    try:
        module.start()
    except (ModelError, ProviderError) as exc:
        log.error("cannot serve the model: %s", exc)
        return EXIT_CONFIG
    except EdgeInferenceError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FATAL
    return module.wait()
