"""The module's one exception tree.

    EdgeInferenceError            base of everything the module raises on purpose
    ├── SettingsError             a boot setting (environment variable) is invalid: exit non-zero at start
    ├── ModelError                the model file is missing, unreadable or has inputs/outputs we cannot serve
    ├── ProviderError             no acceptable execution provider (e.g. REQUIRE_GPU=true on a CPU-only host)
    │   └── GpuError              the GPU failed under a running session (CUDA error, device lost): the
    │                             inference stage stops, frames stay claimed, and the module exits to restart
    ├── ShareError                a share cannot be used as the module needs it at start (one sentence, exit 1)
    ├── PortInUseError            HTTP_PORT or METRICS_PORT is taken by another process (one sentence, exit 2)
    ├── UnavailableError          the module cannot take the request now (not ready, overloaded, paused);
    │                             `retry_after` seconds is a hint (HTTP 503 + Retry-After)
    ├── FrameError                one frame cannot be processed; stays per-frame (result with `error`, file
    │                             moved to failed/), never stops the module. `code` is the stable error code
    │                             written into the result schema (`error.code`).
    ├── OutputFullError           the output share has no space left (ENOSPC/EDQUOT) while a result was written:
    │                             nothing was left half-written; intake pauses until space returns
    ├── InferenceError            several inference batches failed in a row: the model cannot run any more, the
    │                             inference stage dies (each frame of a failed batch already got its own result)
    ├── SdkCallTimeout            an IoT SDK call did not return within IOT_TIMEOUT_SECONDS (retried with back-off)
    ├── RolloutError              a twin model (or candidate) was refused: the model in force keeps serving; `ac`
    │                             is the acknowledgement code (400: the value names a model that cannot be had or
    │                             served, 500: it could not be fetched or loaded now); the message never holds a
    │                             URL's query (its SAS token)
    └── WorkerDied                a long-lived thread ended without being asked to (see workers.py)

Anything else escaping a stage is a bug: the stage dies, the module exits non-zero and IoT Edge restarts it.
"""

from __future__ import annotations


class EdgeInferenceError(Exception):
    """Base of the module's own errors."""


class SettingsError(EdgeInferenceError):
    """Boot settings are invalid: `problems` has one sentence per bad variable."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class ModelError(EdgeInferenceError):
    """The model cannot be loaded or served."""


class ProviderError(EdgeInferenceError):
    """No acceptable execution provider is active."""


class GpuError(ProviderError):
    """The GPU failed under a session that had worked (run raised on a GPU provider)."""


class ShareError(EdgeInferenceError):
    """A share cannot be used as the module needs it (e.g. its state folder is a plain file)."""


class PortInUseError(EdgeInferenceError):
    """A port the module must listen on is taken (another copy of the module still running?); the message names
    the port and the setting that chooses it."""

    def __init__(self, setting: str, host: str, port: int) -> None:
        self.setting = setting
        self.port = port
        super().__init__(
            f"{setting}={port} is already in use on {host or 'all addresses'}: another edge-inference (make run,"
            f" make demo, make simulate) may still be running; stop it, or set {setting} to a free port"
        )


class FrameError(EdgeInferenceError):
    """One frame cannot be processed. `code` goes into the result's `error.code`."""

    # Stable codes (documented in README "Failed frames").
    EMPTY = "empty_file"
    TOO_LARGE = "file_too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT = "corrupt_image"
    UNSUPPORTED = "unsupported_image"
    READ_FAILED = "read_failed"
    NOT_A_FILE = "not_a_regular_file"
    INFERENCE_FAILED = "inference_failed"
    TOO_MANY_SCANS = "too_many_scans"  # a progressive JPEG over JPEG_MAX_SCANS (a scan bomb)
    DECODE_MEMORY = "decode_memory_over_limit"  # the decode would need more than MAX_DECODE_MB
    DECODE_TIMEOUT = "decode_timeout"  # the decode ran past DECODE_TIMEOUT_SECONDS
    PREPARE_FAILED = "prepare_failed"  # anything else that went wrong while decoding/letterboxing this frame
    POSTPROCESS_FAILED = "postprocess_failed"  # the model's output for this frame could not be read
    WRITE_FAILED = "write_failed"  # this frame's outputs could not be written (not a share outage)
    QUARANTINED = (
        "quarantined"  # started MAX_FRAME_ATTEMPTS times without finishing: set aside (pipeline/quarantine.py)
    )

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class UnavailableError(EdgeInferenceError):
    """The module cannot take this request now (not ready, overloaded, shutting down)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutputFullError(EdgeInferenceError):
    """The output share has no space left (ENOSPC/EDQUOT): nothing was left half-written."""


class InferenceError(EdgeInferenceError):
    """Inference failed for several batches in a row: the stage that runs the model gives up."""


class RolloutError(EdgeInferenceError):
    """A model rollout (or candidate) was refused; `ac` is 400 (bad value) or 500 (failed to fetch or load)."""

    def __init__(self, message: str, ac: int = 500) -> None:
        super().__init__(message)
        self.ac = ac


class SdkCallTimeout(EdgeInferenceError):
    """An IoT SDK call did not return within `iot_timeout_seconds`."""


class WorkerDied(EdgeInferenceError):
    """A long-lived worker thread ended while nobody had asked it to stop."""
