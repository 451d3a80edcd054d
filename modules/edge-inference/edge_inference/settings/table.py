"""The settings table: each boot setting written once, as a field of the frozen `Settings` - its name (the field
name in capitals), its type (the annotation), its default, its range and its meaning (`setting(...)`).

Everything else is derived from this table (settings/reader.py): the reader, `ENV_VARS`, the README table and
`.env.example`'s module section (`tools/settings_doc.py`). A new setting is one new field here.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from edge_inference.cpu_quota import cpu_budget
from edge_inference.settings.values import (
    _FOLDER_PAIRS,
    MIN_API_KEY_LENGTH,
    PerFolder,
    _api_key,
    _log_level,
    _per_folder,
    _replica_id,
    parse_providers,
    setting,
)

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = PACKAGE_DIR.parent / "models" / "demo-defects.onnx"

WatchMode = Literal["auto", "events", "poll"]
Disposition = Literal["archive", "delete", "keep"]


@dataclass(frozen=True)
class Settings:
    """The validated boot configuration of one module process; the fields, in README order, are the table."""

    model_path: Path = setting(DEFAULT_MODEL_PATH, "ONNX model file", shown="bundled demo model")
    labels_path: Path | None = setting(None, "class names, one per line; else the model metadata `names`", shown="")
    models_dir: Path | None = setting(
        None, "read-only models share: a twin `model`/`candidate` `path` is relative to it (never leaves it)", shown=""
    )
    model_allow_http: bool = setting(False, "true: twin model URLs may be plain http:// (labs only; else HTTPS only)")
    model_max_mb: float = setting(
        1024.0, "largest model a twin `model`/`candidate` may download or copy (a labels file: 1 MB)", lo=1, hi=100_000
    )
    model_cache_count: int = setting(
        3,
        "models kept in STATE_DIR/models (the active one included): instant rollbacks, kept across restarts",
        lo=1,
        hi=100,
    )
    model_ca_file: Path | None = setting(
        None, "extra CA bundle (PEM) trusted for model downloads, besides the system store", shown=""
    )
    input_dir: Path = setting(Path("/app/input"), "mounted input share (frames are dropped here)")
    output_dir: Path = setting(Path("/app/output"), "mounted output share (results/, annotated/, failed/, processed/)")
    state_dir: Path = setting(
        Path("/app/state"), "persistent module state (ledger, outbox, model cache, TensorRT engine cache)"
    )
    confidence_threshold: float = setting(
        0.5, "initial confidence threshold; the twin's confidenceThreshold wins", lo=0, hi=1
    )
    iou_threshold: float = setting(0.45, "initial NMS IoU threshold; the twin's iouThreshold wins", lo=0, hi=1)
    max_detections: int = setting(
        300, "initial cap on detections per frame; the twin's maxDetections wins", lo=1, hi=1000
    )
    agnostic_nms: bool = setting(False, "true: NMS across classes instead of per class")
    execution_providers: tuple[str, ...] = setting(
        ("auto",),
        "auto (TensorRT if enabled, else CUDA, else CPU) or a list: cuda,cpu",
        parse=parse_providers,
        allowed="auto or a comma list of tensorrt, cuda, cpu",
    )
    tensorrt_enabled: bool = setting(False, "true: try the TensorRT provider first (engine cache in STATE_DIR)")
    tensorrt_fp16: bool = setting(True, "TensorRT: allow fp16 kernels")
    cuda_device_id: int = setting(0, "GPU index for the CUDA/TensorRT providers", lo=0, hi=64)
    require_gpu: bool = setting(False, "true: refuse to become ready when no GPU provider is active")
    watch_mode: WatchMode = setting("auto", "auto (inotify locally, polling on cifs/smb/nfs/fuse), events, poll")
    input_disposition: Disposition = setting(
        "archive", "archive (move to output processed/), delete, keep (read-only share)"
    )
    require_mounted_shares: bool = setting(
        False,
        "true: INPUT_DIR and OUTPUT_DIR must each be a mounted share (a network or FUSE mount, or a file system of"
        " its own), never a plain folder (a share the host had not mounted yet): the module refuses to start",
    )
    settle_seconds: float = setting(
        0.3,
        "a frame is taken when its size and mtime are unchanged this long (on SMB/NFS/FUSE mounts at least the"
        " mount's attribute-cache time + 1 s)",
        lo=0,
        hi=600,
    )
    truncated_grace_seconds: float = setting(
        30.0,
        "a frame that decodes as truncated or empty waits this long unchanged for its writer before it fails"
        " (0 = fail at once)",
        lo=0,
        hi=86400,
    )
    poll_interval_seconds: float = setting(1.0, "polling interval in poll mode", lo=0.05, hi=3600)
    rescan_interval_seconds: float = setting(
        30.0,
        "full sweep of the input tree (0 = only at start-up); polls list only the folders that changed, the sweep"
        " finds what they cannot see (cached or unchanging folder mtimes)",
        lo=0,
        hi=86400,
    )
    progress_interval_seconds: float = setting(
        30.0,
        "while a backlog drains: one log line this often with frames/s, frames left and time left",
        lo=1,
        hi=86400,
    )
    queue_size: int = setting(
        64, "frames claimed and waiting for decode; beyond it frames wait on the share", lo=1, hi=100_000
    )
    decode_workers: int = setting(
        0,
        "decode/preprocess threads; 0 = auto: one per usable CPU, as many decoding at once as keep the model busy"
        " (decode time per frame / model time per frame, measured as frames go)",
        lo=0,
        hi=256,
    )
    inference_threads: int = setting(
        0,
        "ONNX Runtime intra-op threads (0 = the CPUs the container may use: affinity and cgroup quota); on the CPU, 1"
        " suits a light model on large frames, leaving the cores to decoding (docs/PERFORMANCE.md)",
        lo=0,
        hi=256,
    )
    batch_size: int = setting(
        0,
        "largest inference batch; 0 = auto: 8 on a GPU, 1 on the CPU (batches only slow the CPU down)",
        lo=0,
        hi=256,
    )
    batch_max_wait_ms: float = setting(5.0, "longest wait for a batch to fill once one frame is ready", lo=0, hi=10_000)
    max_file_mb: float = setting(100.0, "larger input files are failed without being read", lo=0.001, hi=100_000)
    max_image_pixels: int = setting(
        100_000_000, "larger images (width x height) are failed before decoding", lo=1, hi=10**10
    )
    jpeg_reduced_decode: bool = setting(
        False,
        "true: decode large JPEGs at 1/2, 1/4 or 1/8 size when still at least the model input: faster, but not the"
        " pixels Ultralytics' predictor sees (what it buys and costs: README, Reduced JPEG decoding); frames to"
        " annotate are decoded whole: annotated/ keeps the full resolution",
    )
    jpeg_max_scans: int = setting(
        100,
        "progressive JPEGs with more scans are failed before decoding (a scan bomb decodes for minutes)",
        lo=1,
        hi=100_000,
    )
    max_decode_mb: float = setting(
        1024.0,
        "estimated decode memory (pixels x channels x bytes per sample) of one frame, and of all decodes in flight"
        " together; a larger frame is failed before decoding",
        lo=1,
        hi=10**6,
    )
    decode_timeout_seconds: float = setting(
        10.0,
        "a decode still running after this long fails its frame (decode_timeout); the next frame does not wait for it",
        lo=0.01,
        hi=3600,
    )
    max_frame_attempts: int = setting(
        3,
        "a frame whose processing started this many times without finishing (crash, kill, failing write) is"
        " quarantined: moved to failed/ with code quarantined",
        lo=1,
        hi=1000,
    )
    replica_id: str = setting(
        None,
        "name of this replica's claim area in the input share",
        factory=socket.gethostname,
        shown="hostname",
        parse=_replica_id,
        allowed="letters, digits, '.', '_' or '-'",
    )
    claim_stale_seconds: float = setting(300.0, "claims of a replica silent this long are taken over", lo=5, hi=10**7)
    ledger_retention_days: float = setting(
        7.0,
        "finished frames are forgotten by the ledger after this long (keep mode: only once gone from the share);"
        " reprocess reaches back this far; 0 = never",
        lo=0,
        hi=36500,
    )
    output_retention_days: PerFolder = setting(
        PerFolder(),
        "files the module wrote to the output share are removed, oldest first, once this old (0 = kept): one"
        " number for every folder, or folder:days pairs, e.g. processed:7,annotated:7,*:90",
        shown="0",
        parse=_per_folder(36500),
        allowed=f"a number of days from 0 to 36500, or {_FOLDER_PAIRS}",
    )
    output_max_gb: PerFolder = setting(
        PerFolder(),
        "each output folder is kept under this size, its oldest files removed first (0 = no cap): one number for"
        " every folder, or folder:GB pairs, e.g. processed:500,review:100",
        shown="0",
        parse=_per_folder(10**6),
        allowed=f"a number of GB from 0 to 1000000, or {_FOLDER_PAIRS}",
    )
    shutdown_timeout_seconds: float = setting(20.0, "SIGTERM: drain deadline before exiting", lo=1, hi=3600)
    http_host: str = setting("0.0.0.0", "address the REST API binds to", allowed="an address")
    http_port: int = setting(5000, "REST API port (/predict, /health, /ready)", lo=0, hi=65535)
    http_max_body_mb: float = setting(20.0, "largest /predict body", lo=0.001, hi=10_000)
    http_max_concurrency: int = setting(16, "concurrent /predict requests before 503", lo=1, hi=10_000)
    http_header_timeout_seconds: float = setting(
        10.0, "a connection that has not sent a whole request head in this long is closed (slowloris)", lo=0.1, hi=3600
    )
    http_body_timeout_seconds: float = setting(
        60.0,
        "a request body not received whole in this long is refused (408) and the connection closed",
        lo=0.1,
        hi=3600,
    )
    http_max_connections_per_client: int = setting(
        32, "open connections per client address (REST API and metrics each); more are closed at once", lo=1, hi=100_000
    )
    http_api_key: str = setting(
        "",
        "the key /predict, the live page (/) and its data (/api/...) ask for: `Authorization: Bearer <key>`, or"
        " Basic auth with any user name and the key as password; empty = open to anyone who reaches HTTP_PORT"
        " (/health and /ready are always open)",
        parse=_api_key,
        allowed=f"at least {MIN_API_KEY_LENGTH} printable ASCII characters, no spaces",
        secret=True,
    )
    http_tls_cert: Path | None = setting(
        None, "PEM certificate (chain) for HTTPS on HTTP_PORT; set with HTTP_TLS_KEY; empty = plain HTTP", shown=""
    )
    http_tls_key: Path | None = setting(None, "PEM private key of HTTP_TLS_CERT", shown="")
    ui_recent_frames: int = setting(
        50,
        "frames the live page shows (an in-memory ring; full images of the newest kept within 64 MB; 0 = page"
        " without frames)",
        lo=0,
        hi=1000,
    )
    metrics_port: int = setting(9600, "Prometheus /metrics port (0 = off)", lo=0, hi=65535)
    metrics_api_key: str = setting(
        "",
        "when set, /metrics asks for it (Bearer, or Basic with the key as password); empty = open",
        parse=_api_key,
        allowed=f"at least {MIN_API_KEY_LENGTH} printable ASCII characters, no spaces",
        secret=True,
    )
    min_free_mb: float = setting(
        200.0, "output share / state volume free-space alarm; intake pauses below it", lo=0, hi=10**9
    )
    outbox_max_messages: int = setting(
        100_000, "durable outbox bound (oldest dropped, counted and alerted)", lo=1, hi=10**9
    )
    outbox_max_age_hours: float = setting(
        168.0, "outbox messages older than this are dropped, counted and alerted", lo=0.001, hi=10**6
    )
    iot_timeout_seconds: float = setting(
        30.0, "timeout of each IoT SDK call (twin, send, method response)", lo=0.1, hi=3600
    )
    local_telemetry: Literal["auto", "true", "false"] = setting(
        "auto",
        "auto: outside IoT Edge append each message to OUTPUT_DIR/telemetry.jsonl (the console shows one line per"
        " frame)",
    )
    local_twin_path: Path | None = setting(
        None,
        "outside IoT Edge only (a deployment ignores it): a JSON file of twin desired properties, watched and"
        " applied live like twin patches; acks in `<name>.reported.json` beside it (`make run`: data/twin.json)",
        shown="",
    )
    log_level: str = setting(
        "INFO",
        "DEBUG, INFO, WARNING, ERROR",
        parse=_log_level,
        allowed="one of debug, info, warning, error",
    )
    log_format: Literal["auto", "iotedge", "text"] = setting(
        "auto",
        "iotedge (`<6> 2026-11-30 10:00:00.123 +00:00 ...`: iotedge logs and the portal filter it by level),"
        " text (the local console format), or auto: iotedge inside IoT Edge, text elsewhere",
    )

    def effective_log_format(self, in_iot_edge: bool) -> Literal["iotedge", "text"]:
        """LOG_FORMAT, or for auto: the IoT Edge format inside IoT Edge, the text format elsewhere."""
        if self.log_format == "auto":
            return "iotedge" if in_iot_edge else "text"
        return self.log_format

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def model_max_bytes(self) -> int:
        return int(self.model_max_mb * 1024 * 1024)

    @property
    def models_cache_dir(self) -> Path:
        """The model cache (twin models, their downloads in progress, the rollout's own state)."""
        return self.state_dir / "models"

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

    def effective_decode_workers(self) -> int:
        """DECODE_WORKERS, or for 0: one thread per usable CPU; pipeline/decode_pool.py then lets as many of them
        decode at once as keep the model busy (a light model leaves the cores to decoding, a heavy one on the CPU
        provider keeps them for ONNX Runtime's own threads)."""
        return self.decode_workers or max(1, self.cpu_count)

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
        return replace(self, **changes)
