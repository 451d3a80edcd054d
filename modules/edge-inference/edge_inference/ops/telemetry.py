"""Detection telemetry: turning frame results and health alarms into edgeHub output messages.

`build_detection_message` / `build_alert_message` / `build_health_message` / `build_summary_message` make
`OutgoingMessage`s in the form DESIGN.md fixes: the JSON body is the result schema (`FrameResult.as_dict()`),
the `message_id` is deterministic (the frame id; `<frame id>-alert` on `alerts`), and application properties
let edgeHub/IoT Hub routes select messages without reading the body:

    messageType     detection | summary | alert | health
    detectionCount  number of detections (the real count, also when the body's list was cut)
    hasDetections   true | false
    maxConfidence   highest detection confidence, 4 decimals ("0" when none)
    labels          sorted unique labels, comma separated (cut to MAX_LABELS_PROPERTY characters)
    severity        info | warning | critical
    alarm, active   health messages only: the alarm name and true/false

Every message stays under IoT Hub's 256 KB limit: the size is measured as the SDK and edgeHub see it (UTF-8
body plus the URL-encoded properties); a detection list too long to fit is cut, the body then says
`"truncated": true` and keeps `count` as the real count.

`TelemetryPublisher` is what the pipeline's dispatcher calls once per processed frame; it honours the live
`telemetry` twin settings (perFrame / summary / off) and sends alerts and health alarms on `alerts`.
`LocalTelemetrySink` is local mode's stand-in for edgeHub: one JSON line per message on stdout and in
`OUTPUT_DIR/telemetry.jsonl`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from edge_inference.control.protocols import OutgoingMessage, TelemetrySink
from edge_inference.entities import SCHEMA_VERSION, FrameResult, utc_now_iso
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.ops.metrics import MetricsRegistry

log = logging.getLogger(__name__)

OUTPUTS = ("detections", "alerts")
DETECTIONS_OUTPUT, ALERTS_OUTPUT = OUTPUTS

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"

SEVERITIES = ("info", "warning", "critical")

# IoT Hub's device-to-cloud limit is 256 KB (262144 bytes) for body + properties; the SDK refuses larger
# messages before sending. Keep a margin for system properties (message id, output name, content type).
IOT_HUB_MESSAGE_LIMIT = 256 * 1024
MESSAGE_BUDGET = IOT_HUB_MESSAGE_LIMIT - 6 * 1024
# The properties travel URL-encoded in the MQTT topic (at most 64 KB): keep the label list short.
MAX_LABELS_PROPERTY = 1024


def encode_body(body: dict[str, Any]) -> bytes:
    """The wire form of a body: compact UTF-8 JSON (non-ASCII kept as UTF-8, not \\u escapes)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _property_cost(key: str, value: str) -> int:
    """Bytes a property costs in the worst of the two measures: URL-encoded in the MQTT topic (3 bytes per
    UTF-8 byte) and the SDK's own size check (`sys.getsizeof` of the value string)."""
    utf8 = len(key.encode("utf-8")) + len(value.encode("utf-8"))
    return max(3 * utf8 + 2, sys.getsizeof(value) + len(key))


def message_size(message: OutgoingMessage) -> int:
    """Size of a message as IoT Hub limits it: encoded body, properties, message id and output name."""
    size = len(encode_body(message.body)) + 3 * len(message.message_id.encode()) + len(message.output)
    return size + sum(_property_cost(k, v) for k, v in message.properties.items())


def _format_confidence(value: float) -> str:
    return f"{round(value, 4):g}" if value > 0 else "0"


def _labels_property(labels: Iterable[str]) -> str:
    """Sorted unique labels, comma separated, cut after the last label that fits MAX_LABELS_PROPERTY."""
    text = ""
    for label in sorted(set(labels)):
        candidate = f"{text},{label}" if text else label
        if len(candidate) > MAX_LABELS_PROPERTY:
            break
        text = candidate
    return text


def routing_properties(
    message_type: str, labels: Iterable[str], count: int, max_confidence: float, severity: str
) -> dict[str, str]:
    return {
        "messageType": message_type,
        "detectionCount": str(count),
        "hasDetections": "true" if count > 0 else "false",
        "maxConfidence": _format_confidence(max_confidence),
        "labels": _labels_property(labels),
        "severity": severity,
    }


def _fit(message: OutgoingMessage) -> OutgoingMessage:
    """Cut the body's `detections` list (keeping its order: highest confidence first from NMS) until the
    message fits MESSAGE_BUDGET; `count` stays the real count and `truncated: true` is added."""
    if message_size(message) <= MESSAGE_BUDGET:
        return message
    body = dict(message.body)
    detections = list(body.get("detections") or [])
    body["truncated"] = True

    def sized(keep: int) -> OutgoingMessage:
        return OutgoingMessage(
            message.output, message.message_id, {**body, "detections": detections[:keep]}, message.properties
        )

    lo, hi = 0, len(detections)  # largest `keep` that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if message_size(sized(mid)) <= MESSAGE_BUDGET:
            lo = mid
        else:
            hi = mid - 1
    fitted = sized(lo)
    if message_size(fitted) > MESSAGE_BUDGET:  # something other than detections is huge (a long path?)
        fitted = OutgoingMessage(
            message.output,
            message.message_id,
            {
                "schemaVersion": body.get("schemaVersion", SCHEMA_VERSION),
                "count": body.get("count"),
                "processedAt": body.get("processedAt"),
                "truncated": True,
            },
            message.properties,
        )
    log.warning(
        "message %s cut to fit the IoT Hub limit: %d of %d detections kept", message.message_id, lo, len(detections)
    )
    return fitted


def _max_confidence(result: FrameResult) -> float:
    return max((d.confidence for d in result.detections), default=0.0)


def build_detection_message(result: FrameResult) -> OutgoingMessage:
    """The per-frame message on `detections`: body = the result schema, id = the frame id."""
    severity = "warning" if result.error is not None else "info"
    properties = routing_properties(
        "detection", (d.label for d in result.detections), len(result.detections), _max_confidence(result), severity
    )
    return _fit(OutgoingMessage(DETECTIONS_OUTPUT, result.frame_id, result.as_dict(), properties))


def alert_labels(result: FrameResult, alert_classes: Iterable[str]) -> list[str]:
    """Sorted labels of the frame's detections that belong to an alert class."""
    wanted = set(alert_classes)
    return sorted({d.label for d in result.detections if d.label in wanted})


def build_alert_message(result: FrameResult, matched: list[str]) -> OutgoingMessage:
    """The message on `alerts` for a frame with detections of alert classes: the result schema plus
    `alert.classes` (the matched classes); id `<frame id>-alert`; severity warning."""
    body = result.as_dict()
    body["alert"] = {"classes": matched}
    hits = [d for d in result.detections if d.label in set(matched)]
    properties = routing_properties(
        "alert", (d.label for d in hits), len(hits), max((d.confidence for d in hits), default=0.0), "warning"
    )
    return _fit(OutgoingMessage(ALERTS_OUTPUT, f"{result.frame_id}-alert", body, properties))


def build_health_message(alarm: ActiveAlarm, active: bool, at: str) -> OutgoingMessage:
    """A health alarm raised or cleared, on `alerts`; a clear carries severity info."""
    severity = alarm.severity if active else "info"
    body: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "alarm": alarm.name,
        "active": active,
        "severity": severity,
        "message": alarm.message,
        "details": alarm.details,
        "raisedAt": alarm.raised_at,
        "at": at,
    }
    if not active:
        body["clearedAt"] = at
    properties = routing_properties("health", (), 0, 0.0, severity)
    properties["alarm"] = alarm.name
    properties["active"] = "true" if active else "false"
    message_id = f"health-{alarm.name}-{alarm.raised_at}-{'raised' if active else 'cleared'}"
    message = OutgoingMessage(ALERTS_OUTPUT, message_id, body, properties)
    if message_size(message) > MESSAGE_BUDGET:
        body["details"] = {"truncated": True}
        body["message"] = alarm.message[:1024]
        message = OutgoingMessage(ALERTS_OUTPUT, message_id, body, properties)
    return message


@dataclass
class ActiveAlarm:
    name: str
    message: str
    severity: str
    details: dict[str, Any]
    raised_at: str

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "severity": self.severity, "details": self.details, "since": self.raised_at}


@dataclass
class SummaryWindow:
    """Aggregate of the frames of one summary interval (wall-clock aligned: [start, start + seconds))."""

    start: float  # epoch seconds, a multiple of `seconds`
    seconds: float
    frames: int = 0
    failed: int = 0
    detections: dict[str, int] = field(default_factory=dict)
    max_confidence: float = 0.0
    first_processed_at: str | None = None
    last_processed_at: str | None = None
    model: dict[str, str] | None = None

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        if result.error is not None:
            self.failed += 1
        for d in result.detections:
            self.detections[d.label] = self.detections.get(d.label, 0) + 1
            self.max_confidence = max(self.max_confidence, d.confidence)
        if self.first_processed_at is None:
            self.first_processed_at = result.processed_at
        self.last_processed_at = result.processed_at
        self.model = {"name": result.model.name, "version": result.model.version, "provider": result.model.provider}

    @property
    def message_id(self) -> str:
        return f"summary-{_iso(self.start)}-{self.seconds:g}s"

    def message(self) -> OutgoingMessage:
        total = sum(self.detections.values())
        body: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "summary": {
                "start": _iso(self.start),
                "end": _iso(self.start + self.seconds),
                "intervalSeconds": self.seconds,
            },
            "frames": self.frames,
            "failed": self.failed,
            "detections": dict(sorted(self.detections.items())),
            "count": total,
            "maxConfidence": round(self.max_confidence, 4),
            "firstProcessedAt": self.first_processed_at,
            "lastProcessedAt": self.last_processed_at,
            "model": self.model,
        }
        severity = "warning" if self.failed else "info"
        properties = routing_properties("summary", self.detections, total, self.max_confidence, severity)
        message = OutgoingMessage(DETECTIONS_OUTPUT, self.message_id, body, properties)
        if message_size(message) > MESSAGE_BUDGET:  # thousands of long labels: keep the biggest counts
            kept = dict(sorted(self.detections.items(), key=lambda kv: -kv[1])[:500])
            message = OutgoingMessage(
                DETECTIONS_OUTPUT, self.message_id, {**body, "detections": kept, "truncated": True}, properties
            )
        return message


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TelemetryPublisher:
    """Decides which messages a processed frame produces and hands them to the sink.

    Thread-safe: `on_result`/`tick` come from the dispatcher thread, `alarm` from any thread. A sink that
    fails is logged and never stops the pipeline (the result file on the share is the record of the frame).
    `clock` (monotonic) paces nothing but is kept for tests; summary windows follow `wall_clock` so that
    their ids (`summary-<window start>-<seconds>s`) are the same on every replica and after a restart.
    """

    def __init__(
        self,
        sink: TelemetrySink,
        live: LiveSettings,
        metrics: MetricsRegistry,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.live = live
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._window: SummaryWindow | None = None
        self._alarms: dict[str, ActiveAlarm] = {}
        self._closed = False

    # -- frames --------------------------------------------------------------------------------------------
    def on_result(self, result: FrameResult) -> None:
        """One processed frame (ok or failed): per-frame / summary telemetry and alerts, per the live twin."""
        settings = self.live.current()
        telemetry = settings.telemetry
        outgoing: list[OutgoingMessage] = []
        with self._lock:
            outgoing.extend(self._due_summary(telemetry.mode, telemetry.summary_interval_seconds))
            if telemetry.mode == "perFrame":
                if result.detections or result.error is not None or telemetry.include_empty:
                    outgoing.append(build_detection_message(result))
            elif telemetry.mode == "summary":
                if self._window is None:
                    self._window = self._new_window(telemetry.summary_interval_seconds)
                self._window.add(result)
            matched = alert_labels(result, settings.alert_classes)
            if matched:
                outgoing.append(build_alert_message(result, matched))
        self._publish(outgoing)

    def tick(self) -> None:
        """Flush a summary whose interval has ended (the dispatcher calls this about once a second)."""
        telemetry = self.live.current().telemetry
        with self._lock:
            outgoing = self._due_summary(telemetry.mode, telemetry.summary_interval_seconds)
        self._publish(outgoing)

    def close(self) -> None:
        """Flush the pending summary (a partial interval) and stop; the sink is closed by its owner."""
        with self._lock:
            window, self._window = self._window, None
            self._closed = True
        if window is not None and window.frames:
            self._publish([window.message()])

    def _new_window(self, seconds: float) -> SummaryWindow:
        seconds = max(1.0, float(seconds))
        return SummaryWindow(start=math.floor(self.wall_clock() / seconds) * seconds, seconds=seconds)

    def _due_summary(self, mode: str, seconds: float) -> list[OutgoingMessage]:
        """Close the open window when its interval ended, or the mode/interval changed (lock held)."""
        window = self._window
        if window is None:
            return []
        ended = self.wall_clock() >= window.start + window.seconds
        if ended or mode != "summary" or float(seconds) != window.seconds:
            self._window = None
            return [window.message()] if window.frames else []
        return []

    # -- health alarms -------------------------------------------------------------------------------------
    def alarm(
        self, name: str, message: str, severity: str, active: bool, details: dict[str, Any] | None = None
    ) -> None:
        """Raise (`active=True`) or clear a health alarm. A message goes to `alerts` on the raise and on the
        clear only: raising an alarm that is already active updates its text/details silently."""
        if severity not in SEVERITIES:
            severity = "warning"
        with self._lock:
            current = self._alarms.get(name)
            if active:
                if current is not None:
                    current.message, current.severity, current.details = message, severity, dict(details or {})
                    return
                alarm = ActiveAlarm(name, message, severity, dict(details or {}), utc_now_iso())
                self._alarms[name] = alarm
            else:
                if current is None:
                    return
                alarm = self._alarms.pop(name)
                alarm.message = message or alarm.message
                if details:
                    alarm.details = dict(details)
        self.metrics.alarms.labels(alarm=name).set(1 if active else 0)
        log.log(
            logging.WARNING if active else logging.INFO,
            "alarm %s %s: %s",
            name,
            "raised" if active else "cleared",
            message,
        )
        self._publish([build_health_message(alarm, active, utc_now_iso())])

    def active_alarms(self) -> dict[str, dict[str, Any]]:
        """The alarms raised and not cleared, for reported properties and getStatus."""
        with self._lock:
            return {name: alarm.as_dict() for name, alarm in self._alarms.items()}

    def _publish(self, messages: list[OutgoingMessage]) -> None:
        for message in messages:
            try:
                self.sink.publish(message)
            except Exception:
                log.exception("telemetry sink failed; message %s on %s lost", message.message_id, message.output)


class LocalTelemetrySink:
    """Local mode's edgeHub: each message as one JSON line on `stream` and appended to
    `output_dir/telemetry.jsonl` (line-buffered and flushed per line; no fsync: a debugging aid)."""

    def __init__(self, output_dir: Path, stream: TextIO = sys.stdout) -> None:
        self.path = Path(output_dir) / "telemetry.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = stream
        self._lock = threading.Lock()
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def publish(self, message: OutgoingMessage) -> None:
        line = json.dumps(
            {
                "output": message.output,
                "messageId": message.message_id,
                "properties": message.properties,
                "body": message.body,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        with self._lock:
            if self._file is None:
                raise RuntimeError("LocalTelemetrySink is closed")
            self._file.write(line + "\n")
            self._file.flush()
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed stdout must not lose the file copy
                pass

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class GroupedSink:
    """Wraps a sink so that the messages published inside `group()` (on that thread) are stored together.

    The dispatcher makes a group of results durable at once; with the outbox underneath, their messages then
    cost one SQLite transaction (one fsync) instead of one per frame. Outside a group it passes through."""

    def __init__(self, inner: TelemetrySink) -> None:
        self.inner = inner
        self._local = threading.local()

    def publish(self, message: OutgoingMessage) -> None:
        buffer: list[OutgoingMessage] | None = getattr(self._local, "buffer", None)
        if buffer is None:
            self.inner.publish(message)
        else:
            buffer.append(message)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        self._local.buffer = []
        try:
            yield
        finally:
            buffer: list[OutgoingMessage] = self._local.buffer
            self._local.buffer = None
            many = getattr(self.inner, "publish_many", None)
            if callable(many):
                many(buffer)
            else:
                for message in buffer:
                    self.inner.publish(message)

    def close(self) -> None:
        self.inner.close()
