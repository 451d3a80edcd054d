"""The one alarm registry: every health alarm of the module is raised and cleared here, and nowhere else.

    alarm                    severity  raised by
    outputShareLow           critical  ops/health.py DiskSpaceMonitor (free space below MIN_FREE_MB)
    gpuOverTemperature       warning   ops/health.py GpuMonitor
    gpuLost                  critical  ops/health.py GpuMonitor
    repeatedFailures         warning   ops/health.py FailureRunMonitor (fed by pipeline/finish.py)
    outboxOverflow           warning   iot/client.py (the outbox's drainer watches its bound)
    inputShareUnavailable    critical  pipeline/gate.py (intake paused: the input share does not answer)
    outputShareUnavailable   critical  pipeline/gate.py (intake paused: the output share does not answer)
    retentionBehind          warning   share/retention.py (old output files cannot be removed fast enough)
    modelRolloutFailed       warning   rollout/controller.py (a twin model or candidate was refused; the model in
                                       force serves on; cleared when a rollout starts again or a model swaps in)
    modelRolledBack          critical  rollout/controller.py (the module rolled a model back by itself: frames
                                       failed on it, or it crashed the module; cleared by the next swap)

A raise and a clear each send one message on `alerts` (raising an alarm that is already active updates its
text and details silently), set `edge_inference_alarm_active{alarm}`, log one line, and tell the listeners
(the intake gate pauses intake while `outputShareLow` is raised). A listener that fails is logged and never
stops the others. `active()` is what getStatus and the twin's reported `stats` show.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_inference.entities import SCHEMA_VERSION, utc_now_iso
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.telemetry import (
    ALERTS_OUTPUT,
    MESSAGE_BUDGET,
    OutgoingMessage,
    TelemetrySink,
    message_size,
    routing_properties,
)

log = logging.getLogger(__name__)

OUTPUT_SHARE_LOW = "outputShareLow"
GPU_OVER_TEMPERATURE = "gpuOverTemperature"
GPU_LOST = "gpuLost"
REPEATED_FAILURES = "repeatedFailures"
OUTBOX_OVERFLOW = "outboxOverflow"
INPUT_SHARE_UNAVAILABLE = "inputShareUnavailable"
OUTPUT_SHARE_UNAVAILABLE = "outputShareUnavailable"
RETENTION_BEHIND = "retentionBehind"
MODEL_ROLLOUT_FAILED = "modelRolloutFailed"
MODEL_ROLLED_BACK = "modelRolledBack"

SEVERITY: dict[str, str] = {
    OUTPUT_SHARE_LOW: "critical",
    GPU_OVER_TEMPERATURE: "warning",
    GPU_LOST: "critical",
    REPEATED_FAILURES: "warning",
    OUTBOX_OVERFLOW: "warning",
    INPUT_SHARE_UNAVAILABLE: "critical",
    OUTPUT_SHARE_UNAVAILABLE: "critical",
    RETENTION_BEHIND: "warning",
    MODEL_ROLLOUT_FAILED: "warning",
    MODEL_ROLLED_BACK: "critical",
}
ALARMS = tuple(SEVERITY)

AlarmListener = Callable[[str, bool, dict[str, Any]], None]


@dataclass
class ActiveAlarm:
    name: str
    message: str
    severity: str
    details: dict[str, Any]
    raised_at: str

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "severity": self.severity, "details": self.details, "since": self.raised_at}


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


class AlarmRegistry:
    """The alarms raised and not cleared; thread-safe (monitors, stages and the IoT owner raise from their
    own threads). `sink` takes the messages for `alerts`."""

    def __init__(self, sink: TelemetrySink, metrics: MetricsRegistry) -> None:
        self.sink = sink
        self.metrics = metrics
        self._lock = threading.Lock()
        self._active: dict[str, ActiveAlarm] = {}
        self._listeners: list[AlarmListener] = []
        for name in ALARMS:
            metrics.alarms.labels(alarm=name).set(0)

    def subscribe(self, listener: AlarmListener) -> None:
        """Call `listener(alarm, active, details)` after every raise and clear."""
        with self._lock:
            self._listeners.append(listener)

    def set(self, name: str, active: bool, details: dict[str, Any] | None = None, message: str = "") -> None:
        """Raise (`active=True`) or clear alarm `name` (one of ALARMS). `message` defaults to `<name> raised`."""
        if name not in SEVERITY:
            raise ValueError(f"unknown alarm {name!r}; alarms: {', '.join(ALARMS)}")
        text = message or f"{name} {'raised' if active else 'cleared'}"
        with self._lock:
            current = self._active.get(name)
            if active:
                if current is not None:
                    current.message, current.details = text, dict(details or {})
                    return
                alarm = ActiveAlarm(name, text, SEVERITY[name], dict(details or {}), utc_now_iso())
                self._active[name] = alarm
            else:
                if current is None:
                    return
                alarm = self._active.pop(name)
                alarm.message = text
                if details:
                    alarm.details = dict(details)
            listeners = list(self._listeners)
        self.metrics.alarms.labels(alarm=name).set(1 if active else 0)
        log.log(
            logging.WARNING if active else logging.INFO,
            "alarm %s %s: %s %s",
            name,
            "raised" if active else "cleared",
            text,
            alarm.details,
        )
        try:
            self.sink.publish(build_health_message(alarm, active, utc_now_iso()))
        except Exception:
            log.exception("telemetry sink failed; alarm message %s lost", name)
        for listener in listeners:
            try:
                listener(name, active, alarm.details)
            except Exception:
                log.exception("alarm listener failed for %s", name)

    def raise_alarm(self, name: str, details: dict[str, Any] | None = None, message: str = "") -> None:
        self.set(name, True, details, message)

    def clear(self, name: str, details: dict[str, Any] | None = None, message: str = "") -> None:
        self.set(name, False, details, message)

    def is_active(self, name: str) -> bool:
        with self._lock:
            return name in self._active

    def active(self) -> dict[str, dict[str, Any]]:
        """The alarms raised and not cleared, for reported properties and getStatus."""
        with self._lock:
            return {name: alarm.as_dict() for name, alarm in self._active.items()}
