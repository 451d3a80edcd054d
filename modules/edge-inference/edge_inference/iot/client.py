"""The module's connection to edgeHub: the only place that touches the azure-iot-device SDK.

    pipeline --publish--> Outbox (SQLite, STATE_DIR/outbox.sqlite) --owner thread: send, ack--> edgeHub outputs
    SDK handler threads --(patch | method | input message)--> inbox queue --owner thread--> twin / methods / files

One owner thread (this class is its `Worker`, `iot-edge-client`) does all the work; the SDK's handler threads
only put what arrived on a bounded queue. Every SDK call runs with the IOT_TIMEOUT_SECONDS deadline of
iot/calls.py. The outbox is built before this client; the twin's application state is iot/twin.py's
`TwinState`; direct methods and file events go to `ModuleControl` (control/commands.py).

- `connect(timeout)`: start the owner thread, connect, GET the twin, apply the desired properties, report the
  acknowledgements and `runtime`, then return True; False (boot values in force, still trying in the
  background) when edgeHub does not answer in `timeout`.
- Desired patches: the SDK also delivers the whole desired document after each reconnect; validation is
  idempotent, and a patch older than the version applied is skipped.
- Telemetry: the owner drains the outbox in order whenever edgeHub answers (send, then ack; on error back off
  and retry). A message the SDK reports failed may have been delivered: its stable id lets upstream drop it.
- Reported `stats` are throttled (every `stats_interval_s`, only when changed); `runtime` once per process and
  again after each model swap (the model rollout puts it, and its `model`/`candidate` acknowledgements, into the
  shared `ReportedProperties`).
- When the outbox drops messages at its bound the client raises `outboxOverflow` (ops/alarms.py); it clears it
  once the outbox is back under half its bound.
- Secrets are never logged: only the hub host, device and module ids.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from edge_inference.control.protocols import ModuleControl
from edge_inference.iot.calls import SdkCaller
from edge_inference.iot.file_events import parse_file_events
from edge_inference.iot.methods import MethodDispatcher
from edge_inference.iot.outbox import Outbox
from edge_inference.iot.profile_rules import ServedModel
from edge_inference.iot.twin import ModelRequests, ReportedProperties, TwinState, desired_version
from edge_inference.ops.alarms import OUTBOX_OVERFLOW, AlarmRegistry
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.telemetry import CONTENT_ENCODING, CONTENT_TYPE, OutgoingMessage, encode_body
from edge_inference.settings import Settings, edge_identity
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

T = TypeVar("T")

FILE_EVENTS_INPUT = "fileEvents"
# The module's IoT Plug and Play interface (modules/edge-inference/pnp/, DTDL v2). The SDK announces a
# `product_info` that starts with "dtmi" as the model ID when it connects (the MQTT `model-id` field), for
# modules as for devices; IoT Central and IoT Explorer then render the properties, telemetry and commands.
PNP_MODEL_ID = "dtmi:edgeinference:EdgeInference;1"
_INBOX_SIZE = 1000  # patches, method calls and input messages waiting for the owner thread; beyond: dropped
_DRAIN_BATCH = 100
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.5, 10.0


def _default_factory() -> Any:
    from azure.iot.device import IoTHubModuleClient

    return IoTHubModuleClient.create_from_edge_environment(connection_retry_interval=5, product_info=PNP_MODEL_ID)


class IoTEdgeClient(Worker):
    """Connects the running module to edgeHub: twin, direct methods, `fileEvents` input, outbox drain."""

    def __init__(
        self,
        settings: Settings,
        live: LiveSettings,
        control: ModuleControl,
        metrics: MetricsRegistry,
        outbox: Outbox,
        alarms: AlarmRegistry,
        runtime_info: Callable[[], dict[str, Any]],
        stats: Callable[[], dict[str, Any]],
        *,
        stats_interval_s: float = 30.0,
        client_factory: Callable[[], Any] = _default_factory,
        reported: ReportedProperties | None = None,
        models: ModelRequests | None = None,
        served: Callable[[], ServedModel] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("iot-edge-client", supervisor, daemon=True)
        self.settings = settings
        self.live = live
        self.control = control
        self.metrics = metrics
        self.outbox = outbox
        self.alarms = alarms
        self.runtime_info = runtime_info
        self.stats = stats
        self.stats_interval_s = stats_interval_s
        self.client_factory = client_factory
        self.timeout = settings.iot_timeout_seconds
        self.methods = MethodDispatcher(control)
        self.twin = TwinState(live, metrics, reported, models, served=served)
        self.twin.reported.subscribe(self.wake)  # the model rollout reports from its own thread
        self.outbox.subscribe(self.wake)
        self._dropped_seen = outbox.dropped()
        self._caller = SdkCaller()
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_INBOX_SIZE)
        self._wake = threading.Event()
        self._synced = threading.Event()  # the twin was fetched and applied at least once
        self._sdk: Any = None
        self._handlers_set = False
        self._next_stats = 0.0
        self._backoff = _BACKOFF_MIN_S
        self._retry_at = 0.0
        self._send_failing = False
        self._drain_deadline: float | None = None

    # -- public API ----------------------------------------------------------------------------------------
    @property
    def sink(self) -> Outbox:
        """The durable outbox: what the telemetry publisher publishes to (never blocks on edgeHub)."""
        return self.outbox

    @property
    def synced(self) -> bool:
        """True once the twin has been fetched from edgeHub and applied."""
        return self._synced.is_set()

    def connect(self, timeout: float) -> bool:
        """Start the owner thread; connect and apply the twin before returning (True); False when edgeHub did
        not answer in `timeout` seconds: boot values stay in force and the connection keeps being tried in the
        background."""
        if self.started:
            raise RuntimeError("IoTEdgeClient already started")
        ident = edge_identity()
        log.info(
            "connecting to edgeHub: hub=%s gateway=%s device=%s module=%s",
            ident["hub"],
            ident["gateway"],
            ident["device"],
            ident["module"],
        )
        self.start()
        if self._synced.wait(timeout):
            return True
        log.warning("edgeHub not reachable within %g s: starting with boot settings, still trying", timeout)
        return False

    def stop(self, timeout: float = 5.0) -> bool:
        """Send what the outbox holds within `timeout` seconds, then disconnect and shut the SDK down. The
        outbox stays open: its owner (the composition root) closes it."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._drain_deadline = deadline - min(2.0, timeout / 4)  # leave time to disconnect
        self.request_stop()
        ended = True
        if self.started:
            ended = self.join(max(0.1, deadline - time.monotonic() + 1.0))
            if not ended:
                log.warning("IoT client did not stop within %g s", timeout)
        else:
            self._shutdown_sdk(deadline)
        self._caller.close()
        left = self.outbox.depth()
        if left:
            log.info("stopped with %d messages in the outbox; they are sent after the restart", left)
        return ended

    def wake(self) -> None:
        self._wake.set()

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

    def _watch_outbox(self) -> None:
        """Raise `outboxOverflow` when the outbox dropped messages since the last look; clear it once the outbox
        is back under half its bound."""
        dropped = self.outbox.dropped()
        new = {reason: n - self._dropped_seen.get(reason, 0) for reason, n in dropped.items()}
        new = {reason: n for reason, n in new.items() if n > 0}
        self._dropped_seen = dropped
        if new:
            total, reason = sum(new.values()), ",".join(sorted(new))
            self.alarms.raise_alarm(
                OUTBOX_OVERFLOW,
                {"reason": reason, "dropped": total},
                f"outbox bound reached: {total} messages dropped ({reason})",
            )
        elif self.alarms.is_active(OUTBOX_OVERFLOW) and self.outbox.depth() <= self.outbox.max_messages // 2:
            self.alarms.clear(OUTBOX_OVERFLOW, message="outbox back under half its bound")

    # -- the owner thread ---------------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            stopping = self.stopping
            try:
                self._step(stopping)
            except Exception:
                log.exception("IoT client loop error; retrying")
                self._fail()
            if stopping and (self.outbox.depth() == 0 or self._past_drain_deadline() or not self._synced.is_set()):
                return
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def teardown(self) -> None:
        self._shutdown_sdk(time.monotonic() + min(self.timeout, 5.0))

    def _past_drain_deadline(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    def _idle_wait(self) -> float:
        now = time.monotonic()
        if now < self._retry_at:
            return min(1.0, self._retry_at - now)
        return 0.05 if (self.outbox.depth() and self._synced.is_set() and not self.stopping) else 1.0

    def _step(self, stopping: bool) -> None:
        self._watch_outbox()
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
        self.twin.apply(desired, full=True)
        self.twin.report_runtime_once(self.runtime_info)
        self._flush_reported()
        self._ok()
        self._synced.set()
        log.info("connected to edgeHub; twin desired $version %s applied", desired_version(desired))

    def _flush_reported(self) -> None:
        if not self.twin.has_pending or self._sdk is None:
            return
        patch = self.twin.take_reported()
        try:
            self._call(lambda: self._sdk.patch_twin_reported_properties(patch), "patch_twin_reported_properties")
        except Exception as e:
            log.warning("reporting twin properties failed (%s: %s); will retry", type(e).__name__, e)
            self.twin.put_back(patch)
            self._fail()

    def _serve_inbox(self) -> None:
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                if kind == "patch":
                    self.twin.apply(item, full=False)
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
                if self.stopping and self._past_drain_deadline():
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
        if self.twin.offer_stats(stats):
            self._flush_reported()

    def _shutdown_sdk(self, deadline: float) -> None:
        sdk, self._sdk = self._sdk, None
        if sdk is None:
            return
        timeout = max(0.5, deadline - time.monotonic())
        try:
            self._caller.call(sdk.shutdown, timeout, "shutdown")
        except Exception as e:
            log.warning("IoT client shutdown: %s: %s", type(e).__name__, e)
