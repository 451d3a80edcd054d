"""Boot settings: the one place that reads the process environment.

Every variable is read once at start-up, validated, and turned into a frozen `Settings`. A bad value
raises `SettingsError` with one sentence naming the variable, the value and what is allowed; the module
then exits non-zero before touching the model or the shares. The table in README.md and `.env.example`
document the same variables (a test checks that the three agree).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge_inference.cpu_quota import cpu_budget
from edge_inference.errors import SettingsError

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_PATH = PACKAGE_DIR.parent / "models" / "demo-defects.onnx"

WatchMode = Literal["auto", "events", "poll"]
Disposition = Literal["archive", "delete", "keep"]

T = TypeVar("T")


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable: its name, default (as text) and meaning."""

    name: str
    default: str
    meaning: str


# The documented variables, in README order. `read_settings` reads exactly these (plus the IoT Edge
# runtime's own IOTEDGE_* / EdgeHubConnectionString, which the IoT SDK reads and which are not settings).
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("MODEL_PATH", "bundled demo model", "ONNX model file"),
    EnvVar("LABELS_PATH", "", "class names, one per line; else the model metadata `names`"),
    EnvVar("INPUT_DIR", "/app/input", "mounted input share (frames are dropped here)"),
    EnvVar("OUTPUT_DIR", "/app/output", "mounted output share (results/, annotated/, failed/, processed/)"),
    EnvVar("STATE_DIR", "/app/state", "persistent module state (ledger, outbox, TensorRT engine cache)"),
    EnvVar("CONFIDENCE_THRESHOLD", "0.5", "initial confidence threshold; the twin's confidenceThreshold wins"),
    EnvVar("IOU_THRESHOLD", "0.45", "initial NMS IoU threshold; the twin's iouThreshold wins"),
    EnvVar("MAX_DETECTIONS", "300", "initial cap on detections per frame; the twin's maxDetections wins"),
    EnvVar("AGNOSTIC_NMS", "false", "true: NMS across classes instead of per class"),
    EnvVar("EXECUTION_PROVIDERS", "auto", "auto (TensorRT if enabled, else CUDA, else CPU) or a list: cuda,cpu"),
    EnvVar("TENSORRT_ENABLED", "false", "true: try the TensorRT provider first (engine cache in STATE_DIR)"),
    EnvVar("TENSORRT_FP16", "true", "TensorRT: allow fp16 kernels"),
    EnvVar("CUDA_DEVICE_ID", "0", "GPU index for the CUDA/TensorRT providers"),
    EnvVar("REQUIRE_GPU", "false", "true: refuse to become ready when no GPU provider is active"),
    EnvVar("WATCH_MODE", "auto", "auto (inotify locally, polling on cifs/smb/nfs/fuse), events, poll"),
    EnvVar("INPUT_DISPOSITION", "archive", "archive (move to output processed/), delete, keep (read-only share)"),
    EnvVar(
        "SETTLE_SECONDS",
        "0.3",
        "a frame is taken when its size and mtime are unchanged this long (on SMB/NFS/FUSE mounts at least the"
        " mount's attribute-cache time + 1 s)",
    ),
    EnvVar(
        "TRUNCATED_GRACE_SECONDS",
        "30",
        "a frame that decodes as truncated or empty waits this long unchanged for its writer before it fails"
        " (0 = fail at once)",
    ),
    EnvVar("POLL_INTERVAL_SECONDS", "1.0", "polling interval in poll mode"),
    EnvVar("RESCAN_INTERVAL_SECONDS", "30", "reconciliation sweep of the input tree (0 = only at start-up)"),
    EnvVar("QUEUE_SIZE", "64", "frames claimed and waiting for decode; beyond it frames wait on the share"),
    EnvVar(
        "DECODE_WORKERS",
        "0",
        "decode/preprocess threads; 0 = auto: one per usable CPU on a GPU, half of them on the CPU",
    ),
    EnvVar(
        "INFERENCE_THREADS",
        "0",
        "ONNX Runtime intra-op threads (0 = the CPUs the container may use: affinity and cgroup quota)",
    ),
    EnvVar(
        "BATCH_SIZE",
        "0",
        "largest inference batch; 0 = auto: 8 on a GPU, 1 on the CPU (batches only slow the CPU down)",
    ),
    EnvVar("BATCH_MAX_WAIT_MS", "5", "longest wait for a batch to fill once one frame is ready"),
    EnvVar("MAX_FILE_MB", "100", "larger input files are failed without being read"),
    EnvVar("MAX_IMAGE_PIXELS", "100000000", "larger images (width x height) are failed before decoding"),
    EnvVar(
        "JPEG_REDUCED_DECODE", "true", "decode large JPEGs at 1/2, 1/4 or 1/8 size when still at least the model input"
    ),
    EnvVar(
        "JPEG_MAX_SCANS",
        "100",
        "progressive JPEGs with more scans are failed before decoding (a scan bomb decodes for minutes)",
    ),
    EnvVar(
        "MAX_DECODE_MB",
        "1024",
        "estimated decode memory (pixels x channels x bytes per sample) of one frame, and of all decodes in flight together; a larger frame is failed before decoding",
    ),
    EnvVar(
        "DECODE_TIMEOUT_SECONDS",
        "10",
        "a decode still running after this long fails its frame (decode_timeout); the next frame does not wait for it",
    ),
    EnvVar(
        "MAX_FRAME_ATTEMPTS",
        "3",
        "a frame whose processing started this many times without finishing (crash, kill, failing write) is quarantined: moved to failed/ with code quarantined",
    ),
    EnvVar("REPLICA_ID", "hostname", "name of this replica's claim area in the input share"),
    EnvVar("CLAIM_STALE_SECONDS", "300", "claims of a replica silent this long are taken over"),
    EnvVar(
        "LEDGER_RETENTION_DAYS",
        "7",
        "finished frames are forgotten by the ledger after this long (keep mode: only once gone from the share);"
        " reprocess reaches back this far; 0 = never",
    ),
    EnvVar("SHUTDOWN_TIMEOUT_SECONDS", "20", "SIGTERM: drain deadline before exiting"),
    EnvVar("HTTP_HOST", "0.0.0.0", "address the REST API binds to"),
    EnvVar("HTTP_PORT", "5000", "REST API port (/predict, /health, /ready)"),
    EnvVar("HTTP_MAX_BODY_MB", "20", "largest /predict body"),
    EnvVar("HTTP_MAX_CONCURRENCY", "16", "concurrent /predict requests before 503"),
    EnvVar(
        "HTTP_HEADER_TIMEOUT_SECONDS",
        "10",
        "a connection that has not sent a whole request head in this long is closed (slowloris)",
    ),
    EnvVar(
        "HTTP_BODY_TIMEOUT_SECONDS",
        "60",
        "a request body not received whole in this long is refused (408) and the connection closed",
    ),
    EnvVar(
        "HTTP_MAX_CONNECTIONS_PER_CLIENT",
        "32",
        "open connections per client address (REST API and metrics each); more are closed at once",
    ),
    EnvVar("METRICS_PORT", "9600", "Prometheus /metrics port (0 = off)"),
    EnvVar("MIN_FREE_MB", "200", "output share / state volume free-space alarm; intake pauses below it"),
    EnvVar("OUTBOX_MAX_MESSAGES", "100000", "durable outbox bound (oldest dropped, counted and alerted)"),
    EnvVar("OUTBOX_MAX_AGE_HOURS", "168", "outbox messages older than this are dropped, counted and alerted"),
    EnvVar("IOT_TIMEOUT_SECONDS", "30", "timeout of each IoT SDK call (twin, send, method response)"),
    EnvVar("LOCAL_TELEMETRY", "auto", "auto: outside IoT Edge print telemetry and append telemetry.jsonl"),
    EnvVar("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING, ERROR"),
    EnvVar(
        "LOG_FORMAT",
        "auto",
        "iotedge (`<6> 2026-11-30 10:00:00.123 +00:00 ...`: iotedge logs and the portal filter it by level),"
        " text (the local console format), or auto: iotedge inside IoT Edge, text elsewhere",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The validated boot configuration of one module process."""

    model_path: Path = DEFAULT_MODEL_PATH
    labels_path: Path | None = None
    input_dir: Path = Path("/app/input")
    output_dir: Path = Path("/app/output")
    state_dir: Path = Path("/app/state")
    confidence_threshold: float = 0.5
    iou_threshold: float = 0.45
    max_detections: int = 300
    agnostic_nms: bool = False
    execution_providers: tuple[str, ...] = ("auto",)
    tensorrt_enabled: bool = False
    tensorrt_fp16: bool = True
    cuda_device_id: int = 0
    require_gpu: bool = False
    watch_mode: WatchMode = "auto"
    input_disposition: Disposition = "archive"
    settle_seconds: float = 0.3
    truncated_grace_seconds: float = 30.0
    poll_interval_seconds: float = 1.0
    rescan_interval_seconds: float = 30.0
    queue_size: int = 64
    decode_workers: int = 0
    inference_threads: int = 0
    batch_size: int = 0  # 0: auto (see effective_batch_size)
    batch_max_wait_ms: float = 5.0
    max_file_mb: float = 100.0
    max_image_pixels: int = 100_000_000
    jpeg_reduced_decode: bool = True
    jpeg_max_scans: int = 100
    max_decode_mb: float = 1024.0
    decode_timeout_seconds: float = 10.0
    max_frame_attempts: int = 3
    replica_id: str = field(default_factory=socket.gethostname)
    claim_stale_seconds: float = 300.0
    ledger_retention_days: float = 7.0
    shutdown_timeout_seconds: float = 20.0
    http_host: str = "0.0.0.0"
    http_port: int = 5000
    http_max_body_mb: float = 20.0
    http_max_concurrency: int = 16
    http_header_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 60.0
    http_max_connections_per_client: int = 32
    metrics_port: int = 9600
    min_free_mb: float = 200.0
    outbox_max_messages: int = 100_000
    outbox_max_age_hours: float = 168.0
    iot_timeout_seconds: float = 30.0
    local_telemetry: Literal["auto", "true", "false"] = "auto"
    log_level: str = "INFO"
    log_format: Literal["auto", "iotedge", "text"] = "auto"

    def effective_log_format(self, in_iot_edge: bool) -> Literal["iotedge", "text"]:
        """LOG_FORMAT, or for auto: the IoT Edge format inside IoT Edge, the text format elsewhere."""
        if self.log_format == "auto":
            return "iotedge" if in_iot_edge else "text"
        return self.log_format

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_decode_bytes(self) -> int:
        return int(self.max_decode_mb * 1024 * 1024)

    @property
    def cpu_count(self) -> int:
        """CPUs this process may use: its affinity, capped by the container's cgroup CPU quota (cpu_quota.py)."""
        return cpu_budget().cpus

    @property
    def cuda_cache_path(self) -> Path:
        """CUDA's JIT kernel cache (CUDA_CACHE_PATH): in STATE_DIR, which persists and which uid 1000 can write
        (the image's HOME, /app, is not writable)."""
        return self.state_dir / "cuda-cache"

    def effective_decode_workers(self, on_gpu: bool) -> int:
        """DECODE_WORKERS, or for 0: one per core when a GPU runs the model (decoding is then the limit); half
        the cores on the CPU provider, where every decode thread competes with ONNX Runtime's own threads
        (measured: YOLOv8n-shaped model on 1080p, 2 cores: 0.80 of the ceiling with 1 worker, 0.62-0.73 with 2)."""
        if self.decode_workers:
            return self.decode_workers
        return max(1, self.cpu_count if on_gpu else self.cpu_count // 2)

    def effective_batch_size(self, on_gpu: bool) -> int:
        """BATCH_SIZE, or for 0: 8 on a GPU; 1 on the CPU, where ONNX Runtime is fastest per frame at batch 1
        (measured: YOLOv8n-shaped 640 model, 138 ms/frame at batch 1 vs 248 ms/frame at batch 8; see PERFORMANCE.md)."""
        if self.batch_size:
            return self.batch_size
        return 8 if on_gpu else 1

    @property
    def effective_inference_threads(self) -> int:
        return self.inference_threads or max(1, self.cpu_count)

    def with_overrides(self, **changes: Any) -> Settings:
        from dataclasses import replace

        return replace(self, **changes)


_PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECRET_HINTS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "CONNECTIONSTRING", "SAS")


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _fail(self, name: str, value: str, allowed: str) -> SettingsError:
        shown = "<redacted>" if any(h in name.upper() for h in _SECRET_HINTS) else repr(value)
        return SettingsError(f"{name}={shown} is invalid: expected {allowed}")

    def parse(self, name: str, default: T, convert: Callable[[str], T], allowed: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except (ValueError, TypeError):
            raise self._fail(name, value, allowed) from None

    def number(self, name: str, default: float, lo: float, hi: float, *, integer: bool = False) -> Any:
        kind = "an integer" if integer else "a number"

        def convert(text: str) -> float | int:
            number: float | int = int(text) if integer else float(text)
            if number != number or not lo <= number <= hi:  # NaN or out of range
                raise ValueError(text)
            return number

        return self.parse(name, default, convert, f"{kind} from {lo:g} to {hi:g}")

    def boolean(self, name: str, default: bool) -> bool:
        def convert(text: str) -> bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)

        return self.parse(name, default, convert, "true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> Any:
        def convert(text: str) -> str:
            if text.lower() not in choices:
                raise ValueError(text)
            return text.lower()

        return self.parse(name, default, convert, "one of " + ", ".join(choices))

    def path(self, name: str, default: Path) -> Path:
        return self.parse(name, default, lambda t: Path(t).expanduser(), "a path")


def parse_providers(text: str) -> tuple[str, ...]:
    """`auto` or a comma list of provider aliases/names, in order, e.g. `cuda,cpu`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(text)
    if items == ["auto"] or [i.lower() for i in items] == ["auto"]:
        return ("auto",)
    resolved: list[str] = []
    known = set(_PROVIDER_ALIASES.values())
    for item in items:
        name = _PROVIDER_ALIASES.get(item.lower(), item)
        if name not in known:
            raise ValueError(item)
        if name not in resolved:
            resolved.append(name)
    return tuple(resolved)


def read_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every boot setting from `env` (default: the process environment)."""
    r = _Reader(os.environ if env is None else env)
    d = Settings()
    labels = r.raw("LABELS_PATH")
    settings = Settings(
        model_path=r.path("MODEL_PATH", d.model_path),
        labels_path=Path(labels).expanduser() if labels else None,
        input_dir=r.path("INPUT_DIR", d.input_dir),
        output_dir=r.path("OUTPUT_DIR", d.output_dir),
        state_dir=r.path("STATE_DIR", d.state_dir),
        confidence_threshold=r.number("CONFIDENCE_THRESHOLD", d.confidence_threshold, 0.0, 1.0),
        iou_threshold=r.number("IOU_THRESHOLD", d.iou_threshold, 0.0, 1.0),
        max_detections=r.number("MAX_DETECTIONS", d.max_detections, 1, 1000, integer=True),
        agnostic_nms=r.boolean("AGNOSTIC_NMS", d.agnostic_nms),
        execution_providers=r.parse(
            "EXECUTION_PROVIDERS",
            d.execution_providers,
            parse_providers,
            "auto or a comma list of tensorrt, cuda, cpu",
        ),
        tensorrt_enabled=r.boolean("TENSORRT_ENABLED", d.tensorrt_enabled),
        tensorrt_fp16=r.boolean("TENSORRT_FP16", d.tensorrt_fp16),
        cuda_device_id=r.number("CUDA_DEVICE_ID", d.cuda_device_id, 0, 64, integer=True),
        require_gpu=r.boolean("REQUIRE_GPU", d.require_gpu),
        watch_mode=r.choice("WATCH_MODE", d.watch_mode, ("auto", "events", "poll")),
        input_disposition=r.choice("INPUT_DISPOSITION", d.input_disposition, ("archive", "delete", "keep")),
        settle_seconds=r.number("SETTLE_SECONDS", d.settle_seconds, 0.0, 600.0),
        truncated_grace_seconds=r.number("TRUNCATED_GRACE_SECONDS", d.truncated_grace_seconds, 0.0, 86400.0),
        poll_interval_seconds=r.number("POLL_INTERVAL_SECONDS", d.poll_interval_seconds, 0.05, 3600.0),
        rescan_interval_seconds=r.number("RESCAN_INTERVAL_SECONDS", d.rescan_interval_seconds, 0.0, 86400.0),
        queue_size=r.number("QUEUE_SIZE", d.queue_size, 1, 100_000, integer=True),
        decode_workers=r.number("DECODE_WORKERS", d.decode_workers, 0, 256, integer=True),
        inference_threads=r.number("INFERENCE_THREADS", d.inference_threads, 0, 256, integer=True),
        batch_size=r.number("BATCH_SIZE", d.batch_size, 0, 256, integer=True),
        batch_max_wait_ms=r.number("BATCH_MAX_WAIT_MS", d.batch_max_wait_ms, 0.0, 10_000.0),
        max_file_mb=r.number("MAX_FILE_MB", d.max_file_mb, 0.001, 100_000.0),
        max_image_pixels=r.number("MAX_IMAGE_PIXELS", d.max_image_pixels, 1, 10**10, integer=True),
        jpeg_reduced_decode=r.boolean("JPEG_REDUCED_DECODE", d.jpeg_reduced_decode),
        jpeg_max_scans=r.number("JPEG_MAX_SCANS", d.jpeg_max_scans, 1, 100_000, integer=True),
        max_decode_mb=r.number("MAX_DECODE_MB", d.max_decode_mb, 1.0, 10**6),
        decode_timeout_seconds=r.number("DECODE_TIMEOUT_SECONDS", d.decode_timeout_seconds, 0.01, 3600.0),
        max_frame_attempts=r.number("MAX_FRAME_ATTEMPTS", d.max_frame_attempts, 1, 1000, integer=True),
        replica_id=r.parse("REPLICA_ID", d.replica_id, _replica_id, "letters, digits, '.', '_' or '-'"),
        claim_stale_seconds=r.number("CLAIM_STALE_SECONDS", d.claim_stale_seconds, 5.0, 10**7),
        ledger_retention_days=r.number("LEDGER_RETENTION_DAYS", d.ledger_retention_days, 0.0, 36500.0),
        shutdown_timeout_seconds=r.number("SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_timeout_seconds, 1.0, 3600.0),
        http_host=r.parse("HTTP_HOST", d.http_host, str, "an address"),
        http_port=r.number("HTTP_PORT", d.http_port, 0, 65535, integer=True),
        http_max_body_mb=r.number("HTTP_MAX_BODY_MB", d.http_max_body_mb, 0.001, 10_000.0),
        http_max_concurrency=r.number("HTTP_MAX_CONCURRENCY", d.http_max_concurrency, 1, 10_000, integer=True),
        http_header_timeout_seconds=r.number("HTTP_HEADER_TIMEOUT_SECONDS", d.http_header_timeout_seconds, 0.1, 3600.0),
        http_body_timeout_seconds=r.number("HTTP_BODY_TIMEOUT_SECONDS", d.http_body_timeout_seconds, 0.1, 3600.0),
        http_max_connections_per_client=r.number(
            "HTTP_MAX_CONNECTIONS_PER_CLIENT", d.http_max_connections_per_client, 1, 100_000, integer=True
        ),
        metrics_port=r.number("METRICS_PORT", d.metrics_port, 0, 65535, integer=True),
        min_free_mb=r.number("MIN_FREE_MB", d.min_free_mb, 0.0, 10**9),
        outbox_max_messages=r.number("OUTBOX_MAX_MESSAGES", d.outbox_max_messages, 1, 10**9, integer=True),
        outbox_max_age_hours=r.number("OUTBOX_MAX_AGE_HOURS", d.outbox_max_age_hours, 0.001, 10**6),
        iot_timeout_seconds=r.number("IOT_TIMEOUT_SECONDS", d.iot_timeout_seconds, 0.1, 3600.0),
        local_telemetry=r.choice("LOCAL_TELEMETRY", d.local_telemetry, ("auto", "true", "false")),
        log_level=r.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        log_format=r.choice("LOG_FORMAT", d.log_format, ("auto", "iotedge", "text")),
    )
    if settings.http_port and settings.http_port == settings.metrics_port:
        raise SettingsError(f"HTTP_PORT and METRICS_PORT are both {settings.http_port}: they must differ")
    return settings


def _replica_id(text: str) -> str:
    if not text or not all(c.isalnum() or c in "._-" for c in text) or text.startswith("."):
        raise ValueError(text)
    return text


# What the IoT Edge runtime gives a module (the SDK's create_from_edge_environment reads them), and the
# connection-string pair that replaces them outside IoT Edge. They are not settings of ours.
IOTEDGE_VARIABLES = (
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_APIVERSION",
)
EDGEHUB_VARIABLES = ("EdgeHubConnectionString", "EdgeModuleCACertificateFile")


def iot_edge_environment(env: Mapping[str, str] | None = None) -> bool:
    """True when the IoT Edge runtime (or an explicit edgeHub connection string) is present."""
    env = os.environ if env is None else env
    return all(env.get(v) for v in IOTEDGE_VARIABLES) or all(env.get(v) for v in EDGEHUB_VARIABLES)
