"""The form of every edgeHub message: detections, alerts and summaries built from frame results.

`build_detection_message` / `build_alert_message` / `SummaryWindow.message` (and `alarms.build_health_message`)
make `OutgoingMessage`s in the form DESIGN.md fixes: the JSON body is the result schema (`FrameResult.as_dict()`),
the `message_id` is deterministic (the frame id; `<frame id>-alert` on `alerts`), and application properties
let edgeHub/IoT Hub routes select messages without reading the body:

    messageType     detection | summary | alert | health | evaluation (rollout/shadow.py, on `modelEvaluation`)
    detectionCount  number of detections (the real count, also when the body's list was cut); for a classifier
                    1 when its top class is over the confidence threshold, else 0 (`FrameResult.findings`)
    hasDetections   true | false
    maxConfidence   highest detection confidence (a classifier's: its top class's), 4 decimals ("0" when none)
    labels          sorted unique labels, comma separated (cut to MAX_LABELS_PROPERTY characters)
    severity        info | warning | critical
    profile         detection and alert messages of a frame a camera profile judged: the profile's name
                    (cut to MAX_LABELS_PROPERTY characters); absent for frames judged by the global settings
    alarm, active   health messages only: the alarm name and true/false

Every message stays under IoT Hub's 256 KB limit: the size is measured as the SDK and edgeHub see it (UTF-8
body plus the URL-encoded properties); what does not fit is cut, the body then says `"truncated": true` and
keeps `count` as the real count: first the mask polygons of the lowest-ranked detections (their `mask` keeps
`areaPx` and says `"truncated": true`), then detections from the end of the list.

Which messages a frame produces is decided in `ops/publisher.py`; where they go is a `TelemetrySink` (the
durable outbox in `iot/outbox.py`, or local mode's sink in `ops/publisher.py`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from edge_inference.entities import SCHEMA_VERSION, FrameResult

log = logging.getLogger(__name__)

OUTPUTS = ("detections", "alerts", "modelEvaluation")
DETECTIONS_OUTPUT, ALERTS_OUTPUT, MODEL_EVALUATION_OUTPUT = OUTPUTS  # the last: rollout/shadow.py's reports

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"

SEVERITIES = ("info", "warning", "critical")

# IoT Hub's device-to-cloud limit is 256 KB (262144 bytes) for body + properties; the SDK refuses larger
# messages before sending. Keep a margin for system properties (message id, output name, content type).
IOT_HUB_MESSAGE_LIMIT = 256 * 1024
MESSAGE_BUDGET = IOT_HUB_MESSAGE_LIMIT - 6 * 1024
# The properties travel URL-encoded in the MQTT topic (at most 64 KB): keep the label list short.
MAX_LABELS_PROPERTY = 1024


@dataclass(frozen=True)
class OutgoingMessage:
    """One message for an edgeHub output (`detections` or `alerts`).

    `body` is the JSON object; `properties` are the routing application properties (strings);
    `message_id` is deterministic per frame result so upstream can drop duplicates.
    """

    output: str
    message_id: str
    body: dict[str, Any]
    properties: dict[str, str] = field(default_factory=dict)


class TelemetrySink(Protocol):
    """Where outgoing messages go: the durable outbox in IoT Edge, stdout + telemetry.jsonl locally.

    `publish` must not block on the network: it stores the message (durably, in IoT mode) and returns.
    """

    def publish(self, message: OutgoingMessage) -> None: ...

    def close(self) -> None: ...


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


def _without_polygons(detection: dict[str, Any]) -> dict[str, Any]:
    mask = detection["mask"]
    return {**detection, "mask": {"polygons": [], "areaPx": mask.get("areaPx"), "truncated": True}}


def _largest(fits: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest n in lo..hi with fits(n), given fits is monotone (true up to some n) and fits(lo)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit(message: OutgoingMessage) -> OutgoingMessage:
    """Cut the body until the message fits MESSAGE_BUDGET: first the mask polygons of the lowest-ranked
    detections (the list is best first), then detections from the end; `count` stays the real count and
    `truncated: true` is added."""
    if message_size(message) <= MESSAGE_BUDGET:
        return message
    body = dict(message.body)
    detections = list(body.get("detections") or [])
    body["truncated"] = True
    outlined = [i for i, d in enumerate(detections) if isinstance(d, dict) and (d.get("mask") or {}).get("polygons")]

    def sized(kept_outlines: int, keep: int) -> OutgoingMessage:
        cut = set(outlined[kept_outlines:])
        listed = [_without_polygons(d) if i in cut else d for i, d in enumerate(detections[:keep])]
        return OutgoingMessage(message.output, message.message_id, {**body, "detections": listed}, message.properties)

    def fits(candidate: OutgoingMessage) -> bool:
        return message_size(candidate) <= MESSAGE_BUDGET

    everything = len(detections)
    if fits(sized(0, everything)):  # the polygons were what did not fit: keep as many of them as fit
        outlines = _largest(lambda k: fits(sized(k, everything)), 0, len(outlined))
        fitted, kept = sized(outlines, everything), everything
    else:
        kept = _largest(lambda n: fits(sized(0, n)), 0, everything)
        fitted = sized(0, kept)
    if not fits(fitted):  # something other than detections is huge (a long path?)
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
        "message %s cut to fit the IoT Hub limit: %d of %d detections kept", message.message_id, kept, everything
    )
    return fitted


def _max_confidence(result: FrameResult) -> float:
    return max((f.confidence for f in result.findings), default=0.0)


def build_detection_message(result: FrameResult) -> OutgoingMessage:
    """The per-frame message on `detections`: body = the result schema, id = the frame id."""
    severity = "warning" if result.error is not None else "info"
    findings = result.findings
    properties = routing_properties(
        "detection", (f.label for f in findings), len(findings), _max_confidence(result), severity
    )
    return _fit(
        OutgoingMessage(DETECTIONS_OUTPUT, result.frame_id, result.as_dict(), _with_profile(properties, result))
    )


def _with_profile(properties: dict[str, str], result: FrameResult) -> dict[str, str]:
    """The routing properties, with the name of the camera profile that judged the frame when one did."""
    if result.profile is None:
        return properties
    return {**properties, "profile": result.profile[:MAX_LABELS_PROPERTY]}


def alert_labels(result: FrameResult, alert_classes: Iterable[str]) -> list[str]:
    """Sorted labels of the frame's findings (detections, or a classifier's top class over the threshold) that
    belong to an alert class."""
    wanted = set(alert_classes)
    return sorted({f.label for f in result.findings if f.label in wanted})


def build_alert_message(result: FrameResult, matched: list[str]) -> OutgoingMessage:
    """The message on `alerts` for a frame with detections of alert classes: the result schema plus
    `alert.classes` (the matched classes); id `<frame id>-alert`; severity warning."""
    body = result.as_dict()
    body["alert"] = {"classes": matched}
    hits = [f for f in result.findings if f.label in set(matched)]
    properties = routing_properties(
        "alert", (d.label for d in hits), len(hits), max((d.confidence for d in hits), default=0.0), "warning"
    )
    return _fit(OutgoingMessage(ALERTS_OUTPUT, f"{result.frame_id}-alert", body, _with_profile(properties, result)))


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
        for found in result.findings:
            self.detections[found.label] = self.detections.get(found.label, 0) + 1
            self.max_confidence = max(self.max_confidence, found.confidence)
        if self.first_processed_at is None:
            self.first_processed_at = result.processed_at
        self.last_processed_at = result.processed_at
        self.model = result.model.as_dict()

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
