"""The seams between the pipeline core and its front ends (IoT Edge client, HTTP API).

The composition root (`app.py`) passes objects satisfying these protocols to the IoT client and the HTTP
server, so neither imports the pipeline's internals, and tests can drive each side alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_inference.entities import FrameResult


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


class ModuleControl(Protocol):
    """What direct methods and HTTP may ask of the running module."""

    def status(self) -> dict[str, Any]:
        """Counters, queue depths, provider, model, live settings, paused flag: JSON-ready."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def reprocess(self, pattern: str) -> int:
        """Re-queue processed frames whose relative path matches `pattern` (a path or glob); returns how many.

        Raises ValueError for a pattern that escapes the share."""
        ...

    def self_test(self) -> dict[str, Any]:
        """Run a synthetic frame with a known defect through the model; {"passed": bool, ...}."""
        ...

    def enqueue_path(self, rel_path: str, source: str) -> bool:
        """Queue one file of the input share by relative POSIX path (ASE fileEvents). False when unknown,
        already done or already queued. Raises ValueError for paths that escape the share."""
        ...


class Predictor(Protocol):
    """What the HTTP API asks of the pipeline: the same batcher and model as the share frames."""

    def predict(self, data: bytes, *, confidence: float | None = None, timeout: float = 30.0) -> FrameResult:
        """Run one in-memory image through the pipeline with the live twin settings (`confidence` overrides
        the threshold for this request only). Raises FrameError for bytes that are not a usable image
        (the result's error code tells which) and UnavailableError when not ready or overloaded."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): model loaded and warmed, watcher running, GPU present if required."""
        ...

    def active_provider(self) -> str:
        """The ONNX Runtime execution provider in use, e.g. CUDAExecutionProvider."""
        ...
