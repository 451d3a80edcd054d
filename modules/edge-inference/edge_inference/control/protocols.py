"""The seams between the running module and its front ends (IoT Edge direct methods, the REST API).

`control/commands.py` (`ModuleCommands`) satisfies both; the composition root (`app.py`) hands it to the IoT
client and the HTTP server, so neither imports the pipeline, and tests can drive each side alone.
"""

from __future__ import annotations

from typing import Any, Protocol

from edge_inference.entities import FrameResult


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
        """Run a frame with known defects through the model; {"passed": bool, ...}."""
        ...

    def enqueue_path(self, rel_path: str, source: str) -> bool:
        """Queue one file of the input share by relative POSIX path (ASE fileEvents). False when unknown,
        already done or already queued. Raises ValueError for paths that escape the share."""
        ...

    def models(self) -> dict[str, Any]:
        """The active model, the candidate, the rollback targets and the cached models, with hashes."""
        ...

    def rollback_model(self) -> tuple[int, dict[str, Any]]:
        """Back to the model before the active one: (status, body); 202 while it still loads, 409 with none."""
        ...

    def promote_candidate(self) -> tuple[int, dict[str, Any]]:
        """The candidate made active through verify and swap: (status, body); 404 without a candidate."""
        ...


class Predictor(Protocol):
    """What the HTTP API asks of the module: the same batcher and model as the share frames."""

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
