"""The composition root: builds every part of the module in order, starts them, supervises them, stops them.

Build order (each part gets what it needs in its constructor):
    settings (REQUIRE_MOUNTED_SHARES checked first) -> metrics, supervisor, live settings -> telemetry sink (the
    durable outbox in IoT Edge, local mode's sink otherwise) -> alarm registry -> telemetry publisher (local mode:
    behind the console's line per frame) -> model downloader (MODEL_CA_FILE checked) -> model store and the model
    to start on (rollout/startup.py: the one the twin rolled out, else MODEL_PATH; checked, warmed) in its slot ->
    reported properties -> state (ledger, output catalog, claims, result writer) -> pipeline -> watcher ->
    progress monitor -> candidate shadow and model rollout -> commands -> HTTP (REST API, live page) and metrics
    servers -> IoT client (local mode: the local twin file, LOCAL_TWIN_PATH) -> monitors
Start order: HTTP and metrics servers -> IoT client or local twin file (the twin applied before the first frame)
-> pipeline -> model rollout and candidate shadow -> watcher -> monitors. Stop order is the reverse, within
SHUTDOWN_TIMEOUT_SECONDS: the monitors, the local twin file and the watcher stop, the candidate and the rollout
stop, the pipeline drains what it took, HTTP closes, telemetry flushes, the IoT client drains the outbox and
disconnects, the stores close, and the rollout notes the clean stop (a stop after a worker died is not clean: a
model on probation is then taken for the cause at the next start).
Every long-lived thread is a `Worker` (workers.py) reporting to one `Supervisor`; when any of them dies the
module stops and exits with code 1, so that IoT Edge restarts it. Exit codes: 0 after SIGTERM/SIGINT/SIGHUP, 1
when a worker died, 2 on bad settings, a port in use (HTTP_PORT, METRICS_PORT) or a model that cannot be served
(REQUIRE_GPU without a working GPU included: at start, or when the GPU fails under the running session; `gpuLost`
is raised first).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping
from types import FrameType

from edge_inference import __version__
from edge_inference.control.commands import ModuleCommands, runtime_report
from edge_inference.control.http_api import HttpServer, build_http_server
from edge_inference.control.http_auth import ApiKey
from edge_inference.control.http_server import ConnectionLimits
from edge_inference.control.metrics_server import MetricsServer
from edge_inference.control.page_api import PageSources
from edge_inference.errors import (
    EdgeInferenceError,
    GpuError,
    ModelError,
    PortInUseError,
    ProviderError,
    SettingsError,
)
from edge_inference.frame_memory import keep_frame_buffers
from edge_inference.iot.client import IoTEdgeClient
from edge_inference.iot.local_twin import LocalTwinFile
from edge_inference.iot.outbox import Outbox, open_outbox
from edge_inference.iot.profile_rules import ServedModel
from edge_inference.iot.twin import ReportedProperties
from edge_inference.log import setup_logging
from edge_inference.ops.alarms import GPU_LOST, AlarmRegistry
from edge_inference.ops.console import FrameConsole
from edge_inference.ops.health import DiskSpaceMonitor, GpuMonitor
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.progress import ProgressMonitor
from edge_inference.ops.publisher import LocalTelemetrySink, NullSink, TelemetryPublisher
from edge_inference.ops.telemetry import TelemetrySink
from edge_inference.pipeline.finish import ResultListener
from edge_inference.pipeline.runner import Pipeline
from edge_inference.rollout.controller import ModelRollout
from edge_inference.rollout.fetch import FetchPolicy, ModelDownloader
from edge_inference.rollout.prepare import ModelPreparer
from edge_inference.rollout.record import RolloutRecord
from edge_inference.rollout.shadow import CandidateShadow, ShadowInbox
from edge_inference.rollout.spec import SpecRules
from edge_inference.rollout.startup import starting_model
from edge_inference.rollout.store import ModelStore
from edge_inference.rollout.verify import ModelVerifier
from edge_inference.settings import Settings, iot_edge_environment, read_settings, unknown_variable_warnings
from edge_inference.share import tempfiles
from edge_inference.share.catalog import OutputCatalog
from edge_inference.share.claims import ClaimArea
from edge_inference.share.guard import require_mounted_shares
from edge_inference.share.ledger import Ledger
from edge_inference.share.results import ResultWriter
from edge_inference.share.watcher import FrameWatcher
from edge_inference.vision.serving import ModelSlot
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger("edge_inference")

EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: the terminal of `make run` closed


class Module:
    """One edge-inference module, built in the constructor (nothing runs until `start()`).

    `env` is the environment that says whether IoT Edge is there (default: the process's); `stop_event` is what
    a signal sets (main() installs the handlers before the model loads). `telemetry` replaces the telemetry
    publisher as the pipeline's result listener (tests that collect results use it); `fetch_policy` the model
    downloads' retries and timeouts (tests of stalling servers shorten them)."""

    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str] | None = None,
        *,
        stop_event: threading.Event | None = None,
        telemetry: ResultListener | None = None,
        fetch_policy: FetchPolicy | None = None,
    ) -> None:
        s = self.settings = settings
        if s.require_mounted_shares:  # before anything is read from or written to a share folder
            require_mounted_shares({"INPUT_DIR": s.input_dir, "OUTPUT_DIR": s.output_dir})
        self.stop_event = stop_event or threading.Event()
        self._shut_down = False
        self.metrics = MetricsRegistry()
        self.supervisor = Supervisor()
        self.live = LiveSettings(TwinSettings.from_boot(s))
        for folder in (s.output_dir, s.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.in_iot_edge = iot_edge_environment(env)
        self.outbox: Outbox | None = open_outbox(s, self.metrics) if self.in_iot_edge else None
        self.sink: TelemetrySink = self.outbox or (
            LocalTelemetrySink(s.output_dir) if s.local_telemetry != "false" else NullSink()
        )
        self.alarms = AlarmRegistry(self.sink, self.metrics)
        self.publisher = TelemetryPublisher(self.sink, self.live, self.metrics)
        listener: ResultListener = telemetry or self.publisher
        if not self.in_iot_edge:  # local mode: a readable line per frame on the console
            listener = FrameConsole(listener)
        rules = SpecRules(s.model_allow_http, s.models_dir is not None, s.model_max_bytes)
        downloader = ModelDownloader(rules, s.model_ca_file, fetch_policy)
        self.store = ModelStore(s.models_cache_dir, s.model_cache_count)
        starting = starting_model(s, self.store)
        self.model = starting.model  # the model the module starts on; `slot.active` is the one serving now
        self.slot = ModelSlot(self.model)
        self.metrics.provider.info({"provider": self.model.provider})
        self.metrics.model.info(self.model.describe())
        self.reported = ReportedProperties()
        self.ledger = Ledger(s.state_dir / "ledger.sqlite")
        self.catalog = OutputCatalog(s.state_dir / "outputs.sqlite")
        claims = ClaimArea(s.input_dir, s.output_dir, s.replica_id, s.input_disposition, s.claim_stale_seconds)
        shadow_inbox = ShadowInbox()
        self.pipeline = Pipeline(
            s,
            self.slot,
            self.live,
            self.ledger,
            claims,
            ResultWriter(s.output_dir, catalog=self.catalog),
            self.catalog,
            self.metrics,
            self.alarms,
            listener,
            self.supervisor,
            shadow=shadow_inbox,
            telemetry_tick=self.publisher.tick,
            telemetry_file=self.sink if isinstance(self.sink, LocalTelemetrySink) else None,
        )
        self.watcher = FrameWatcher(
            s.input_dir,
            self.pipeline.intake.offer,
            mode=s.watch_mode,
            settle_seconds=s.settle_seconds,
            poll_interval=s.poll_interval_seconds,
            rescan_interval=s.rescan_interval_seconds,
            keeps=not claims.moves_files,
            finished=self.pipeline.intake.finished,
            supervisor=self.supervisor,
        )
        gate, counters = self.pipeline.gate, self.pipeline.counters
        self.progress = ProgressMonitor(
            lambda: self.watcher.frames_left + gate.in_flight_count,
            counters.finished,
            lambda: ", ".join(sorted(gate.blocked)),
            self.metrics,
            s.progress_interval_seconds,
            supervisor=self.supervisor,
        )
        self.shadow = CandidateShadow(s, shadow_inbox, self.pipeline.idle, self.sink, self.live, self.supervisor)
        record = RolloutRecord(self.store, self.reported, self.slot, runtime_report)
        verifier = ModelVerifier(s, self.slot)
        preparer = ModelPreparer(s, self.store, downloader, verifier, record)
        self.rollout = ModelRollout(
            s,
            self.slot,
            starting,
            self.store,
            preparer,
            self.shadow,
            record,
            self.alarms,
            self.metrics,
            rules,
            self.supervisor,
        )
        self.commands = ModuleCommands(
            s,
            self.slot,
            self.live,
            self.pipeline,
            self.watcher,
            self.progress,
            self.alarms,
            self.supervisor,
            self.rollout,
        )
        page = PageSources(
            self.commands.status,
            self.commands.runtime_info,
            self.alarms.active,
            self.pipeline.recent,
            self.outbox.depth if self.outbox is not None else lambda: None,
            str(s.input_dir),
            str(s.output_dir),
        )
        self.http: HttpServer | None = (
            build_http_server(self.commands, self.metrics, s, self.supervisor, page) if s.http_port else None
        )
        self.metrics_server = (
            MetricsServer(
                self.metrics.registry,
                s.metrics_port,
                s.http_host,
                ConnectionLimits.from_settings(s),
                self.supervisor,
                key=ApiKey(s.metrics_api_key, "METRICS_API_KEY"),
            )
            if s.metrics_port
            else None
        )
        self.iot = (
            IoTEdgeClient(
                s,
                self.live,
                self.commands,
                self.metrics,
                self.outbox,
                self.alarms,
                self.commands.runtime_info,
                self.commands.stats,
                reported=self.reported,
                models=self.rollout,
                served=self.served_model,
                supervisor=self.supervisor,
            )
            if self.outbox is not None
            else None
        )
        self.local_twin = (
            LocalTwinFile(
                s.local_twin_path,
                self.live,
                self.metrics,
                self.commands.runtime_info,
                self.commands.stats,
                supervisor=self.supervisor,
                reported=self.reported,
                models=self.rollout,
                served=self.served_model,
            )
            if self.iot is None and s.local_twin_path is not None
            else None
        )
        if self.iot is not None and s.local_twin_path is not None:
            log.warning("LOCAL_TWIN_PATH is ignored inside IoT Edge: the module twin sets the live settings")
        volumes = {"output": s.output_dir, "state": s.state_dir}
        self.monitors: list[PeriodicWorker] = [
            DiskSpaceMonitor(
                volumes, int(s.min_free_mb * 1024 * 1024), self.metrics, self.alarms, supervisor=self.supervisor
            ),
            self.progress,
        ]
        if self.model.on_gpu:
            self.monitors.append(
                GpuMonitor(
                    s.cuda_device_id,
                    self.metrics,
                    self.alarms,
                    pci_bus_id=self.model.pci_bus_id,
                    supervisor=self.supervisor,
                )
            )

    # -- run ----------------------------------------------------------------------------------------------------
    def served_model(self) -> ServedModel:
        """The model in service now, which twin `profiles` and `classThresholds` are checked against: read from
        the slot at each patch, so after a rollout (or a rollback) it is the model serving then, not the boot one."""
        active = self.slot.active
        return ServedModel(active.name, active.class_names)

    def start(self) -> None:
        s = self.settings
        tempfiles.set_tag(s.replica_id)
        removed = tempfiles.remove_stale(s.output_dir, s.replica_id)
        if removed:
            log.info("removed %d temp files left by an earlier run", removed)
        if self.model.gpu_fault is not None:  # a GPU provider failed at start: the module runs on what came next
            details = {"phase": "start", "error": self.model.gpu_fault, "provider": self.model.provider}
            self.alarms.raise_alarm(GPU_LOST, details)
        if self.http is not None:
            self.http.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
        if self.iot is not None:
            self.iot.connect(timeout=s.iot_timeout_seconds)  # the twin is applied before the first frame
        if self.local_twin is not None:
            self.local_twin.start()  # so is the local twin file
        self.pipeline.start()
        self.rollout.start()
        self.shadow.start()
        self.watcher.start()
        for monitor in self.monitors:
            monitor.start()
        log.info(
            "edge-inference %s ready (%s, %s)",
            __version__,
            self.model.provider,
            "IoT Edge" if self.iot else "local mode",
        )

    def wait(self) -> int:
        """Block until asked to stop or a worker dies; then shut down. Returns the exit code."""
        while not self.stop_event.wait(0.5):
            death = self.supervisor.first_death()
            if death is not None:
                return self._stop_after(*death)
        self.shutdown()
        return EXIT_OK

    def _stop_after(self, worker: str, error: BaseException) -> int:
        """A worker died. A GPU that failed under the running session is reported (`gpuLost`) and, with
        REQUIRE_GPU, ends the module with exit 2 and one sentence (the restart would only find it gone again)."""
        if isinstance(error, GpuError):
            details = {"phase": "inference", "error": str(error), "provider": self.model.provider}
            self.alarms.raise_alarm(GPU_LOST, details)
            log.error("stopping: %s; frames in flight stay claimed and are taken again at restart", error)
            self.shutdown(clean=False)
            return EXIT_CONFIG if self.settings.require_gpu else EXIT_FATAL
        log.error("stopping: %s", self.supervisor.describe_death())
        self.shutdown(clean=False)
        return EXIT_FATAL

    def request_stop(self) -> None:
        self.stop_event.set()

    def shutdown(self, *, clean: bool = True) -> None:
        """Stop everything in reverse order within SHUTDOWN_TIMEOUT_SECONDS (once; later calls do nothing).
        `clean=False` (a worker died): the rollout does not note a clean stop."""
        if self._shut_down:
            return
        self._shut_down = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
        for monitor in self.monitors:
            monitor.stop()
        if self.local_twin is not None:
            self.local_twin.stop()
        self.watcher.stop(timeout=2.0)
        self.shadow.stop(timeout=1.0)
        self.rollout.stop(timeout=1.0)  # a daemon: a verify under way is left to the process's end
        drained = self.pipeline.stop(deadline)
        if self.http is not None:
            self.http.stop(timeout=2.0)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.publisher.close()
        if self.iot is not None:
            self.iot.stop(timeout=max(1.0, deadline - time.monotonic()))
        self.sink.close()
        self.ledger.close()
        if clean:
            self.rollout.close()
        self.catalog.close()
        log.info("stopped (%s)", "drained" if drained else "deadline reached; unfinished frames resume at restart")


def main(env: Mapping[str, str] | None = None) -> int:
    """`python -m edge_inference`: read settings, run until SIGTERM, exit with a meaningful code."""
    keep_frame_buffers()  # before any thread: every frame's large buffers reused, not faulted in again
    in_iot_edge = iot_edge_environment(env)
    try:
        settings = read_settings(env)
    except SettingsError as exc:
        setup_logging("INFO", "iotedge" if in_iot_edge else "text")
        for problem in exc.problems:
            log.error("invalid setting: %s", problem)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.effective_log_format(in_iot_edge))
    for warning in unknown_variable_warnings(env):
        log.warning("%s", warning)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s received: draining", signal.Signals(signum).name)
        stop.set()

    for signum in STOP_SIGNALS:
        if signum != signal.SIGHUP or signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup make run`: ignored
            signal.signal(signum, on_signal)
    try:
        module = Module(settings, env, stop_event=stop)
    except (ModelError, ProviderError) as exc:
        log.error("cannot serve the model: %s", exc)
        return EXIT_CONFIG
    except SettingsError as exc:  # MODEL_CA_FILE, read when the downloader is built
        log.error("invalid setting: %s", exc)
        return EXIT_CONFIG
    except PortInUseError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    except EdgeInferenceError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FATAL
    try:
        module.start()
    except EdgeInferenceError as exc:
        log.error("cannot start: %s", exc)
        module.shutdown()
        return EXIT_CONFIG if isinstance(exc, PortInUseError) else EXIT_FATAL
    return module.wait()
