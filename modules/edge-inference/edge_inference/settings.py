"""Boot settings: the one place that reads the process environment.

Each variable is written once, as a field of the frozen `Settings` below: its name (the field name in capitals),
its type (the annotation), its default, its range and its meaning (`setting(...)`). Everything else is derived
from that one table: the reader (`read_settings`), the README table and `.env.example`'s module section
(`tools/settings_doc.py` rewrites both; a test fails when they are stale), and `ENV_VARS` for the manifest tool.

Every variable is read once at start-up and validated; every bad one is reported at once, each in one sentence
naming the variable, the value and what is allowed (`SettingsError.problems`), and the module exits non-zero
before touching the model or the shares. A variable that is not ours but looks like one of ours (a misspelt
`CONFIDENCE_TRESHOLD`) is named in a warning (`unknown_variable_warnings`).
"""

from __future__ import annotations

import difflib
import os
import socket
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from edge_inference.errors import SettingsError

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_PATH = PACKAGE_DIR.parent / "models" / "demo-defects.onnx"

WatchMode = Literal["auto", "events", "poll"]
Disposition = Literal["archive", "delete", "keep"]

_PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECRET_HINTS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "CONNECTIONSTRING", "SAS")


def parse_providers(text: str) -> tuple[str, ...]:
    """`auto` or a comma list of provider aliases/names, in order, e.g. `cuda,cpu`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(text)
    if [i.lower() for i in items] == ["auto"]:
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


def _replica_id(text: str) -> str:
    if not text or not all(c.isalnum() or c in "._-" for c in text) or text.startswith("."):
        raise ValueError(text)
    return text


def _log_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(text)
    return text.upper()


@dataclass(frozen=True)
class Spec:
    """How one variable is read and documented (kept in its field's metadata)."""

    meaning: str
    shown: str | None = None  # the default as the docs show it, when not the value itself ("" = none)
    lo: float | None = None
    hi: float | None = None
    parse: Callable[[str], Any] | None = None  # a conversion of its own: raises ValueError on a bad value
    allowed: str = ""  # what `parse` accepts, for the error sentence


def setting(
    default: Any,
    meaning: str,
    *,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    parse: Callable[[str], Any] | None = None,
    allowed: str = "",
) -> Any:
    """One row of the settings table: a dataclass field carrying its `Spec`."""
    spec = {"spec": Spec(meaning, shown, lo, hi, parse, allowed)}
    if factory is not None:
        return field(default_factory=factory, metadata=spec)
    return field(default=default, metadata=spec)


@dataclass(frozen=True)
class Settings:
    """The validated boot configuration of one module process; the fields, in README order, are the table."""

    model_path: Path = setting(DEFAULT_MODEL_PATH, "ONNX model file", shown="bundled demo model")
    labels_path: Path | None = setting(None, "class names, one per line; else the model metadata `names`", shown="")
    input_dir: Path = setting(Path("/app/input"), "mounted input share (frames are dropped here)")
    output_dir: Path = setting(Path("/app/output"), "mounted output share (results/, annotated/, failed/, processed/)")
    state_dir: Path = setting(Path("/app/state"), "persistent module state (ledger, outbox, TensorRT engine cache)")
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
    settle_seconds: float = setting(
        0.3, "a frame is taken when its size and mtime are unchanged this long", lo=0, hi=600
    )
    poll_interval_seconds: float = setting(1.0, "polling interval in poll mode", lo=0.05, hi=3600)
    rescan_interval_seconds: float = setting(
        30.0, "reconciliation sweep of the input tree (0 = only at start-up)", lo=0, hi=86400
    )
    queue_size: int = setting(
        64, "frames claimed and waiting for decode; beyond it frames wait on the share", lo=1, hi=100_000
    )
    decode_workers: int = setting(
        0, "decode/preprocess threads; 0 = auto: one per core on a GPU, half the cores on the CPU", lo=0, hi=256
    )
    inference_threads: int = setting(0, "ONNX Runtime intra-op threads on CPU (0 = cores)", lo=0, hi=256)
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
        True, "decode large JPEGs at 1/2, 1/4 or 1/8 size when still at least the model input"
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
    shutdown_timeout_seconds: float = setting(20.0, "SIGTERM: drain deadline before exiting", lo=1, hi=3600)
    http_host: str = setting("0.0.0.0", "address the REST API binds to", allowed="an address")
    http_port: int = setting(5000, "REST API port (/predict, /health, /ready)", lo=0, hi=65535)
    http_max_body_mb: float = setting(20.0, "largest /predict body", lo=0.001, hi=10_000)
    http_max_concurrency: int = setting(16, "concurrent /predict requests before 503", lo=1, hi=10_000)
    metrics_port: int = setting(9600, "Prometheus /metrics port (0 = off)", lo=0, hi=65535)
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
        "auto", "auto: outside IoT Edge print telemetry and append telemetry.jsonl"
    )
    log_level: str = setting(
        "INFO",
        "DEBUG, INFO, WARNING, ERROR",
        parse=_log_level,
        allowed="one of debug, info, warning, error",
    )

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def cpu_count(self) -> int:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

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
        return replace(self, **changes)


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable, as the docs show it: name, default (as text, "" = none), meaning."""

    name: str
    default: str
    meaning: str


def _rows() -> Iterator[tuple[str, str, Any, Spec]]:
    """(variable name, field name, type, spec) of every setting, in table order."""
    hints = typing.get_type_hints(Settings)
    for f in fields(Settings):
        yield f.name.upper(), f.name, hints[f.name], f.metadata["spec"]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def _documented_default(name: str, spec: Spec) -> str:
    if spec.shown is not None:
        return spec.shown
    f = Settings.__dataclass_fields__[name]
    return _shown(f.default)


ENV_VARS: tuple[EnvVar, ...] = tuple(
    EnvVar(var, _documented_default(name, spec), spec.meaning) for var, name, _, spec in _rows()
)
SETTING_NAMES = frozenset(v.name for v in ENV_VARS)


class _Reader:
    """Reads every variable of the table from `env`, collecting every problem before it gives up."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def _fail(self, name: str, value: str, allowed: str) -> SettingsError:
        shown = "<redacted>" if any(h in name.upper() for h in _SECRET_HINTS) else repr(value)
        return SettingsError(f"{name}={shown} is invalid: expected {allowed}")

    def read(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for var, name, kind, spec in _rows():
            text = self.env.get(var)
            if text is None or not text.strip():
                continue  # unset or blank: the default
            convert, allowed = _converter(kind, spec)
            try:
                values[name] = convert(text.strip())
            except (ValueError, TypeError):
                self.problems.append(str(self._fail(var, text.strip(), allowed)))
        return values


def _converter(kind: Any, spec: Spec) -> tuple[Callable[[str], Any], str]:
    """The conversion of one variable's text by its type and range, and what it accepts (for the error)."""
    if spec.parse is not None:
        return spec.parse, spec.allowed
    if kind is bool:
        return _boolean, "true or false"
    if kind in (int, float):
        integer = kind is int
        lo = -float("inf") if spec.lo is None else spec.lo
        hi = float("inf") if spec.hi is None else spec.hi

        def number(text: str) -> float | int:
            value: float | int = int(text) if integer else float(text)
            if value != value or not lo <= value <= hi:  # NaN or out of range
                raise ValueError(text)
            return value

        return number, f"{'an integer' if integer else 'a number'} from {lo:g} to {hi:g}"
    if typing.get_origin(kind) is Literal:
        choices = tuple(str(c) for c in typing.get_args(kind))

        def choice(text: str) -> str:
            if text.lower() not in choices:
                raise ValueError(text)
            return text.lower()

        return choice, "one of " + ", ".join(choices)
    if Path in (kind, *typing.get_args(kind)):
        return lambda text: Path(text).expanduser(), "a path"
    return str, spec.allowed or "a string"


def _boolean(text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(text)


def read_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every boot setting from `env` (default: the process environment); raises
    `SettingsError` naming every bad variable."""
    reader = _Reader(os.environ if env is None else env)
    values = reader.read()
    problems = reader.problems
    http_port, metrics_port = values.get("http_port", 5000), values.get("metrics_port", 9600)
    if http_port and http_port == metrics_port:
        problems.append(f"HTTP_PORT and METRICS_PORT are both {http_port}: they must differ")
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def unknown_variable_warnings(env: Mapping[str, str] | None = None) -> list[str]:
    """A sentence for each variable that is not a setting but looks like a misspelt one (or one in lower case)."""
    env = os.environ if env is None else env
    ours = sorted(SETTING_NAMES)
    warnings = []
    for name in env:
        if name in SETTING_NAMES or name in IOTEDGE_VARIABLES or name in EDGEHUB_VARIABLES:
            continue
        close = difflib.get_close_matches(name.upper(), ours, n=1, cutoff=0.8)
        if close:
            warnings.append(f"{name} is not a setting of this module and is ignored: did you mean {close[0]}?")
    return sorted(warnings)


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


def edge_identity(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Hub host, device and module ids of the edge environment, for logs (never keys or tokens)."""
    env = os.environ if env is None else env
    if env.get("IOTEDGE_DEVICEID"):
        return {
            "hub": env.get("IOTEDGE_IOTHUBHOSTNAME", ""),
            "gateway": env.get("IOTEDGE_GATEWAYHOSTNAME", ""),
            "device": env.get("IOTEDGE_DEVICEID", ""),
            "module": env.get("IOTEDGE_MODULEID", ""),
        }
    parts = {}
    for part in env.get("EdgeHubConnectionString", "").split(";"):
        key, _, value = part.partition("=")
        parts[key.strip()] = value.strip()
    return {
        "hub": parts.get("HostName", ""),
        "gateway": parts.get("GatewayHostName", ""),
        "device": parts.get("DeviceId", ""),
        "module": parts.get("ModuleId", ""),
    }
