"""The module's connection to edgeHub: the only place that touches the azure-iot-device SDK.

    pipeline --publish--> Outbox (SQLite, STATE_DIR/outbox.sqlite) --owner thread: send, ack--> edgeHub outputs
    SDK handler threads --(patch | method | input message)--> inbox queue --owner thread--> twin / methods / files

One owner thread does all the work; the SDK's handler threads only put what arrived on a bounded queue. The
sync SDK blocks without a deadline (`connect`, `get_twin`, `send_message_to_output`, ... wait on the pipeline's
callback with no timeout), so every SDK call runs through `_SdkCaller`: on a worker thread, waited for at most
`Settings.iot_timeout_seconds`; a worker stuck past that is abandoned (a daemon thread) and a fresh one takes
the next call.

- `start(timeout)`: connect, GET the twin, validate and apply the desired properties to `live`, report the
  acknowledgements and `runtime`, then return True. When edgeHub cannot be reached in `timeout`, it logs a
  warning and returns False with the boot values in force; the owner thread keeps trying and applies the twin
  when it comes.
- Desired patches: the SDK also delivers the whole desired document after each reconnect (its
  "ensure desired properties" stage); validation is idempotent, and a patch older than the version applied
  is skipped.
- Telemetry: `sink` is the durable `Outbox`; the owner drains it in order whenever edgeHub answers (send,
  then ack; on error back off and retry). The SDK may raise for a message that was in fact delivered, so a
  message can be sent twice: its stable message id lets upstream drop the duplicate.
- Reported `stats` are throttled (every `stats_interval_s`, only when changed); `runtime` once per process.
- Secrets are never logged: only the hub host, device and module ids.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from edge_inference.control import ModuleControl, OutgoingMessage
from edge_inference.iot.file_events import parse_file_events
from edge_inference.iot.methods import MethodDispatcher
from edge_inference.iot.outbox import Outbox
from edge_inference.iot.twin import desired_version, rejected_count, validate_desired
from edge_inference.live_settings import TWIN_PROPERTIES, LiveSettings
from edge_inference.metrics import MetricsRegistry
from edge_inference.settings import Settings
from edge_inference.telemetry import CONTENT_ENCODING, CONTENT_TYPE, encode_body

log = logging.getLogger(__name__)

T = TypeVar("T")

FILE_EVENTS_INPUT = "fileEvents"
# The module's IoT Plug and Play interface (modules/edge-inference/pnp/, DTDL v2). The SDK announces a
# `product_info` that starts with "dtmi" as the model ID when it connects (the MQTT `model-id` field), for
# modules as for devices; IoT Central and IoT Explorer then render the properties, telemetry and commands.
PNP_MODEL_ID = "dtmi:edgeinference:EdgeInference;1"
OUTBOX_ALARM = "outboxOverflow"
_INBOX_SIZE = 1000  # patches, method calls and input messages waiting for the owner thread; beyond: dropped
_DRAIN_BATCH = 100
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.5, 10.0


class SdkCallTimeout(Exception):
    """An SDK call did not return within `iot_timeout_seconds`."""


class _SdkCaller:
    """Runs blocking SDK calls on a worker thread and waits for each at most `timeout` seconds."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] | None = None
        self._lock = threading.Lock()
        self._abandoned = 0

    def call(self, fn: Callable[[], T], timeout: float, what: str) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._jobs is None:
                self._jobs = queue.SimpleQueue()
                threading.Thread(target=self._work, args=(self._jobs,), name="iot-sdk-call", daemon=True).start()
            jobs = self._jobs
        jobs.put((fn, future))
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                if self._jobs is jobs:  # abandon the stuck worker; it ends when (if) its call returns
                    self._jobs = None
                    self._abandoned += 1
                    jobs.put(None)
            raise SdkCallTimeout(f"{what} did not complete within {timeout:g} s") from None

    def close(self) -> None:
        with self._lock:
            if self._jobs is not None:
                self._jobs.put(None)
                self._jobs = None

    @staticmethod
    def _work(jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the waiting caller
                future.set_exception(e)


def edge_identity(env: dict[str, str] | None = None) -> dict[str, str]:
    """Hub host, device and module ids of the edge environment, for logs (never keys or tokens)."""
    env = dict(os.environ) if env is None else env
    if env.get("IOTEDGE_DEVICEID"):
        return {
            "hub": env.get("IOTEDGE_IOTHUBHOSTNAME", ""),
            "gateway": env.get("IOTEDGE_GATEWAYHOSTNAME", ""),
            "device": env.get("IOTEDGE_DEVICEID", ""),
            "module": env.get("IOTEDGE_MODULEID", ""),
        }
    fields = {}
    for part in env.get("EdgeHubConnectionString", "").split(";"):
        key, _, value = part.partition("=")
        fields[key.strip()] = value.strip()
    return {
        "hub": fields.get("HostName", ""),
        "gateway": fields.get("GatewayHostName", ""),
        "device": fields.get("DeviceId", ""),
        "module": fields.get("ModuleId", ""),
    }


def _default_factory() -> Any:
    from azure.iot.device import IoTHubModuleClient

    return IoTHubModuleClient.create_from_edge_environment(connection_retry_interval=5, product_info=PNP_MODEL_ID)


class IoTEdgeClient:
    """Connects the running module to edgeHub: twin, direct methods, `fileEvents` input, outbox drain."""

    def __init__(
        self,
        settings: Settings,
        live: LiveSettings,
        control: ModuleControl,
        metrics: MetricsRegistry,
        runtime_info: Callable[[], dict[str, Any]],
        stats: Callable[[], dict[str, Any]],
        publisher_alarm: Callable[..., None] | None = None,
        *,
        stats_interval_s: float = 30.0,
        client_factory: Callable[[], Any] = _default_factory,
    ) -> None:
        self.settings = settings
        self.live = live
        self.control = control
        self.metrics = metrics
        self.runtime_info = runtime_info
        self.stats = stats
        self.publisher_alarm = publisher_alarm  # may be set after construction (the publisher needs `sink`)
        self.stats_interval_s = stats_interval_s
        self.client_factory = client_factory
        self.timeout = settings.iot_timeout_seconds
        self.methods = MethodDispatcher(control)
        self.outbox = Outbox(
            settings.state_dir / "outbox.sqlite",
            settings.outbox_max_messages,
            settings.outbox_max_age_hours * 3600.0,
            metrics,
            on_drop=self._on_outbox_drop,
        )
        self.outbox.subscribe(self._wake_up)
        self._caller = _SdkCaller()
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_INBOX_SIZE)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._synced = threading.Event()  # the twin was fetched and applied at least once
        self._owner: threading.Thread | None = None
        self._sdk: Any = None
        self._handlers_set = False
        self._runtime_reported = False
        self._pending_reported: dict[str, Any] = {}
        self._applied_version: int | None = None
        self._last_stats: dict[str, Any] | None = None
        self._next_stats = 0.0
        self._backoff = _BACKOFF_MIN_S
        self._retry_at = 0.0
        self._send_failing = False
        self._drain_deadline: float | None = None
        self._outbox_alarm = False

    # -- public API ----------------------------------------------------------------------------------------
    @property
    def sink(self) -> Outbox:
        """The durable outbox: what the telemetry publisher publishes to (never blocks on edgeHub)."""
        return self.outbox

    @property
    def synced(self) -> bool:
        """True once the twin has been fetched from edgeHub and applied."""
        return self._synced.is_set()

    def start(self, timeout: float) -> bool:
        """Connect and apply the twin before returning (True); False when edgeHub did not answer in
        `timeout` seconds: boot values stay in force and the connection keeps being tried in the background."""
        if self._owner is not None:
            raise RuntimeError("IoTEdgeClient already started")
        ident = edge_identity()
        log.info(
            "connecting to edgeHub: hub=%s gateway=%s device=%s module=%s",
            ident["hub"],
            ident["gateway"],
            ident["device"],
            ident["module"],
        )
        self._owner = threading.Thread(target=self._run, name="iot-edge-client", daemon=True)
        self._owner.start()
        if self._synced.wait(timeout):
            return True
        log.warning("edgeHub not reachable within %g s: starting with boot settings, still trying", timeout)
        return False

    def stop(self, timeout: float) -> None:
        """Send what the outbox holds within `timeout` seconds, then disconnect and shut the SDK down."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._drain_deadline = deadline - min(2.0, timeout / 4)  # leave time to disconnect
        self._stopping.set()
        self._wake.set()
        if self._owner is not None:
            self._owner.join(max(0.1, deadline - time.monotonic() + 1.0))
            if self._owner.is_alive():
                log.warning("IoT client did not stop within %g s", timeout)
        else:
            self._shutdown_sdk(deadline)
        self._caller.close()
        left = self.outbox.depth()
        if left:
            log.info("stopped with %d messages in the outbox; they are sent after the restart", left)
        self.outbox.close()

    # -- SDK handler threads: hand over and return -------------------------------------------------------
    def _hand_over(self, kind: str, item: Any) -> None:
        try:
            self._inbox.put_nowait((kind, item))
        except queue.Full:
            log.warning("IoT inbox full: %s dropped", kind)
        self._wake.set()

    def _on_patch(self, patch: Any) -> None:
        self._hand_over("patch", patch)

    def _on_method(self, request: Any) -> None:
        self._hand_over("method", request)

    def _on_message(self, message: Any) -> None:
        if getattr(message, "input_name", None) == FILE_EVENTS_INPUT:
            self._hand_over("fileEvents", message.data)
        else:
            log.warning("message on unknown input %r ignored", getattr(message, "input_name", None))

    def _wake_up(self) -> None:
        self._wake.set()

    def _on_outbox_drop(self, reason: str, n: int) -> None:
        alarm = self.publisher_alarm
        if alarm is not None:
            self._outbox_alarm = True
            alarm(
                OUTBOX_ALARM,
                f"outbox bound reached: {n} messages dropped ({reason})",
                "warning",
                True,
                {"reason": reason, "dropped": n},
            )

    # -- the owner thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                stopping = self._stopping.is_set()
                try:
                    self._step(stopping)
                except Exception:
                    log.exception("IoT client loop error; retrying")
                    self._fail()
                if stopping and (self.outbox.depth() == 0 or self._past_drain_deadline() or not self._synced.is_set()):
                    break
                self._wake.wait(self._idle_wait())
                self._wake.clear()
        finally:
            self._shutdown_sdk(time.monotonic() + min(self.timeout, 5.0))

    def _past_drain_deadline(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    def _idle_wait(self) -> float:
        now = time.monotonic()
        if now < self._retry_at:
            return min(1.0, self._retry_at - now)
        return 0.05 if (self.outbox.depth() and self._synced.is_set() and not self._stopping.is_set()) else 1.0

    def _step(self, stopping: bool) -> None:
        if time.monotonic() < self._retry_at:
            self._serve_inbox()
            return
        if not self._synced.is_set() or not self._handlers_set:
            if stopping:
                return
            self._sync()
            if not self._synced.is_set():
                return
        self._serve_inbox()
        self._flush_reported()
        self._drain()
        if not stopping:
            self._maybe_report_stats()
            self._maybe_clear_outbox_alarm()
            self.outbox.expire()

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self._caller.call(fn, self.timeout, what)

    def _ok(self) -> None:
        self._backoff = _BACKOFF_MIN_S
        self._retry_at = 0.0

    def _fail(self) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(_BACKOFF_MAX_S, self._backoff * 2)

    def _sync(self) -> None:
        """Create the SDK client, connect, set the handlers, fetch and apply the twin."""
        try:
            if self._sdk is None:
                self._sdk = self._call(self.client_factory, "creating the IoT client")
            sdk = self._sdk
            self._call(sdk.connect, "connect")
            if not self._handlers_set:
                self._call(
                    lambda: setattr(sdk, "on_twin_desired_properties_patch_received", self._on_patch),
                    "enabling twin patches",
                )
                self._call(
                    lambda: setattr(sdk, "on_method_request_received", self._on_method), "enabling direct methods"
                )
                self._call(lambda: setattr(sdk, "on_message_received", self._on_message), "enabling inputs")
                self._handlers_set = True
            twin = self._call(sdk.get_twin, "get_twin")
        except Exception as e:
            log.warning("edgeHub not reachable (%s: %s); retrying in %.1f s", type(e).__name__, e, self._backoff)
            self._fail()
            return
        desired = twin.get("desired", {}) if isinstance(twin, dict) else {}
        self._apply_desired(desired, full=True)
        if not self._runtime_reported:
            try:
                self._pending_reported["runtime"] = self.runtime_info()
            except Exception:
                log.exception("runtime_info failed")
            self._runtime_reported = True
        self._flush_reported()
        self._ok()
        self._synced.set()
        log.info("connected to edgeHub; twin desired $version %s applied", desired_version(desired))

    def _apply_desired(self, desired: Any, *, full: bool) -> None:
        if not isinstance(desired, dict):
            log.warning("twin desired properties are not an object; ignored")
            return
        version = desired_version(desired)
        if version is not None and self._applied_version is not None and version < self._applied_version:
            log.info("twin patch $version %s older than the applied %s: skipped", version, self._applied_version)
            return
        current = self.live.current()
        new, acks = validate_desired(desired, current)
        changes = {
            field: getattr(new, field)
            for field in TWIN_PROPERTIES.values()
            if getattr(new, field) != getattr(current, field)
        }
        if changes:
            self.live.update(**changes)
        if version is not None:
            self._applied_version = version
        rejected = rejected_count(acks)
        if len(acks) - rejected:
            self.metrics.twin_updates.labels(result="applied").inc(len(acks) - rejected)
        if rejected:
            self.metrics.twin_updates.labels(result="rejected").inc(rejected)
            log.warning(
                "twin: %d desired properties refused: %s",
                rejected,
                "; ".join(f"{k}: {a.get('ad')}" for k, a in acks.items() if a.get("ac") != 200)[:1000],
            )
        if changes:
            log.info("twin $version %s applied: %s", version, ", ".join(sorted(changes)))
        if full:  # at start: report the value in force of every writable property not in desired
            in_force = self.live.current().as_twin()
            for key in TWIN_PROPERTIES:
                if key not in acks:
                    acks[key] = {"value": in_force[key], "ac": 203, "av": version or 0, "ad": "boot value"}
        self._pending_reported.update(acks)

    def _flush_reported(self) -> None:
        if not self._pending_reported or self._sdk is None:
            return
        patch, self._pending_reported = self._pending_reported, {}
        try:
            self._call(lambda: self._sdk.patch_twin_reported_properties(patch), "patch_twin_reported_properties")
        except Exception as e:
            log.warning("reporting twin properties failed (%s: %s); will retry", type(e).__name__, e)
            self._pending_reported = {**patch, **self._pending_reported}
            self._fail()

    def _serve_inbox(self) -> None:
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                if kind == "patch":
                    self._apply_desired(item, full=False)
                    self._flush_reported()
                elif kind == "method":
                    self._serve_method(item)
                elif kind == "fileEvents":
                    self._serve_file_events(item)
            except Exception:
                log.exception("IoT %s handling failed", kind)

    def _serve_method(self, request: Any) -> None:
        from azure.iot.device import MethodResponse

        status, payload = self.methods.handle(str(request.name), request.payload)
        response = MethodResponse.create_from_method_request(request, status, payload)
        try:
            self._call(lambda: self._sdk.send_method_response(response), "send_method_response")
        except Exception as e:
            log.warning("direct method %s: response not sent (%s: %s)", request.name, type(e).__name__, e)

    def _serve_file_events(self, body: Any) -> None:
        for rel in parse_file_events(body):
            try:
                queued = self.control.enqueue_path(rel, "fileEvent")
                log.debug("fileEvents: %s %s", rel, "queued" if queued else "not queued")
            except (ValueError, OSError) as e:  # one bad entry never costs the rest of the message
                log.warning("fileEvents: %r refused: %s", rel, e)

    def _drain(self) -> None:
        """Send waiting messages in order; stop at the first failure (back off) or when the inbox needs us."""
        if self._sdk is None or not self._synced.is_set():
            return
        for _ in range(10):  # at most 10 batches per step, so patches and methods are served in between
            batch = self.outbox.peek(_DRAIN_BATCH)
            if not batch:
                return
            for seq, message in batch:
                if self._stopping.is_set() and self._past_drain_deadline():
                    return
                if not self._send(seq, message):
                    return
                if not self._inbox.empty():
                    self._serve_inbox()

    def _send(self, seq: int, message: OutgoingMessage) -> bool:
        from azure.iot.device import Message

        sdk_message = Message(  # type: ignore[no-untyped-call]
            encode_body(message.body),
            message_id=message.message_id,
            content_encoding=CONTENT_ENCODING,
            content_type=CONTENT_TYPE,
        )
        sdk_message.custom_properties = dict(message.properties)
        started = time.monotonic()
        try:
            self._call(lambda: self._sdk.send_message_to_output(sdk_message, message.output), "send_message_to_output")
        except ValueError as e:  # the SDK refuses it (size): it can never be sent
            log.error("message %s refused by the SDK (%s): dropped", message.message_id, e)
            self.metrics.outbox_dropped.labels(reason="invalid").inc()
            self.outbox.ack([seq])
            return True
        except Exception as e:
            if not self._send_failing:
                log.warning(
                    "sending to edgeHub failed (%s: %s); %d messages wait in the outbox",
                    type(e).__name__,
                    e,
                    self.outbox.depth(),
                )
            self._send_failing = True
            self._fail()
            return False
        self.outbox.ack([seq])
        self.metrics.messages_sent.labels(output=message.output).inc()
        self.metrics.stage_seconds.labels(stage="send").observe(time.monotonic() - started)
        if self._send_failing:
            log.info("edgeHub takes messages again; %d wait in the outbox", self.outbox.depth())
            self._send_failing = False
        self._ok()
        return True

    def _maybe_report_stats(self) -> None:
        now = time.monotonic()
        if now < self._next_stats or self._sdk is None:
            return
        self._next_stats = now + self.stats_interval_s
        try:
            stats = dict(self.stats())
        except Exception:
            log.exception("stats() failed")
            return
        stats["outbox"] = {"messages": self.outbox.depth()}
        if stats != self._last_stats:
            self._last_stats = stats
            self._pending_reported["stats"] = stats
            self._flush_reported()

    def _maybe_clear_outbox_alarm(self) -> None:
        if self._outbox_alarm and self.outbox.depth() <= self.outbox.max_messages // 2:
            self._outbox_alarm = False
            if self.publisher_alarm is not None:
                self.publisher_alarm(OUTBOX_ALARM, "outbox back under half its bound", "info", False, None)

    def _shutdown_sdk(self, deadline: float) -> None:
        sdk, self._sdk = self._sdk, None
        if sdk is None:
            return
        timeout = max(0.5, deadline - time.monotonic())
        try:
            self._caller.call(sdk.shutdown, timeout, "shutdown")
        except Exception as e:
            log.warning("IoT client shutdown: %s: %s", type(e).__name__, e)
