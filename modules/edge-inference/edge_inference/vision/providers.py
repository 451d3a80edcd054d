"""The execution-provider chain: is there a GPU, do the provider libraries load, and what to try in which order.

The module makes its own chain instead of leaving the fallback to ONNX Runtime: ORT's Python layer retries a
session that failed with TensorRT on CUDA and CPU *without the provider options* (device id and arena setting
dropped), and a CUDA provider that cannot load is dropped with only a log line. Here every attempt is one
provider with its own options; model.py makes one session per attempt, with ORT's fallback off, until one is
made and warmed up, and records what happened to each (`ProviderAttempt`).

- GPU presence: NVIDIA device nodes (`/dev/nvidiactl` + `/dev/nvidia<N>`, or `/dev/dxg` under WSL/EFLOW) and
  then the CUDA driver API itself (`cuInit`, `cuDeviceGetCount` through ctypes). `/proc/driver/nvidia` is not
  used: a container without GPU access can still see it.
- TensorRT: its provider links `libnvinfer.so.10` and `libnvonnxparser.so.10` (readelf on onnxruntime-gpu
  1.26.0), which ORT's `preload_dlls()` does not look for; they are loaded from the `tensorrt_libs` package
  (tensorrt-cu12-libs wheels) or the system library path before a TensorRT attempt is made, else it is skipped.
- TensorRT optimisation profiles cover batch 1..max for a dynamic batch, so the engine is built once (cached in
  STATE_DIR) and never rebuilt for a batch size it has not seen.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_inference.settings import Settings

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})
# What the TensorRT provider of onnxruntime-gpu 1.26 links or dlopens (libnvinfer_plugin at session start).
TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10")
CUDA_DRIVER = "libcuda.so.1"


@dataclass(frozen=True)
class GpuPresence:
    """What the CUDA driver reports: `count` devices visible to this process (0: none, `reason` says why)."""

    count: int
    reason: str
    pci_bus_ids: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return self.count > 0


def detect_gpu(dev_dir: Path = Path("/dev"), driver: str = CUDA_DRIVER, cuda_cache: Path | None = None) -> GpuPresence:
    """Device nodes first (cheap, and no driver library is loaded where there are none), then the driver API.
    `cuda_cache` becomes CUDA_CACHE_PATH before the driver initialises (only where there are device nodes)."""
    nodes = [p for p in dev_dir.glob("nvidia[0-9]*") if p.name[6:].isdigit()]
    wsl = (dev_dir / "dxg").exists()
    if not wsl and (not nodes or not (dev_dir / "nvidiactl").exists()):
        return GpuPresence(0, f"no NVIDIA device nodes in {dev_dir}: the container was given no GPU")
    if cuda_cache is not None:
        set_cuda_cache(cuda_cache)
    try:
        cuda = ctypes.CDLL(driver)
    except OSError as exc:
        return GpuPresence(0, f"the CUDA driver {driver} cannot be loaded ({exc}): the GPU runtime did not mount it")
    rc = cuda.cuInit(0)
    if rc != 0:
        return GpuPresence(0, f"cuInit failed: {_cuda_error(cuda, rc)}")
    count = ctypes.c_int(0)
    rc = cuda.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0:
        return GpuPresence(0, f"cuDeviceGetCount failed: {_cuda_error(cuda, rc)}")
    if count.value == 0:
        return GpuPresence(0, "the CUDA driver reports no devices (CUDA_VISIBLE_DEVICES?)")
    return GpuPresence(count.value, f"{count.value} CUDA device(s)", _pci_bus_ids(cuda, count.value))


def _cuda_error(cuda: Any, rc: int) -> str:
    name = ctypes.c_char_p()
    if cuda.cuGetErrorName(rc, ctypes.byref(name)) == 0 and name.value:
        return f"{name.value.decode()} ({rc})"
    return f"CUDA error {rc}"


def _pci_bus_ids(cuda: Any, count: int) -> tuple[str, ...]:
    """PCI bus id per CUDA device index: NVML finds the same card by it whatever order each one numbers in."""
    ids: list[str] = []
    for index in range(count):
        device = ctypes.c_int(0)
        buffer = ctypes.create_string_buffer(32)
        if cuda.cuDeviceGet(ctypes.byref(device), index) != 0 or cuda.cuDeviceGetPCIBusId(buffer, 32, device) != 0:
            return ()
        ids.append(buffer.value.decode())
    return tuple(ids)


def set_cuda_cache(path: Path) -> None:
    """Point CUDA's JIT cache at `path` (unless CUDA_CACHE_PATH is set): read by the driver at cuInit."""
    if "CUDA_CACHE_PATH" not in os.environ:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("CUDA cache folder %s cannot be made (%s); CUDA uses its default", path, exc.strerror)
            return
        os.environ["CUDA_CACHE_PATH"] = str(path)


def preload_cuda_libraries(ort: Any) -> None:
    """Load CUDA, cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN from the nvidia-* wheels (how the image carries CUDA)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    printed = io.StringIO()  # it prints each library it cannot find; one log line says it instead
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as exc:  # best effort: system CUDA libraries may be found anyway
        log.debug("onnxruntime.preload_dlls() did not load CUDA libraries: %s", exc)
    missing = [line.split(":")[0].removeprefix("Failed to load ") for line in printed.getvalue().splitlines()]
    missing = [name for name in missing if name.startswith("lib")]
    if missing:
        log.warning("CUDA libraries not found: %s", ", ".join(missing))


def load_tensorrt_libraries() -> str | None:
    """Load the TensorRT 10 libraries (tensorrt_libs package first, then the system path); None when all
    loaded, else why not. Call after the CUDA libraries are loaded: TensorRT links them."""
    folders: list[str] = []
    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is not None and spec.submodule_search_locations:
        folders = [str(f) for f in spec.submodule_search_locations]
    missing: list[str] = []
    for name in TENSORRT_LIBRARIES:
        candidates = [os.path.join(f, name) for f in folders if os.path.isfile(os.path.join(f, name))] + [name]
        for candidate in candidates:
            try:
                ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
        else:
            missing.append(name)
    if missing:
        return f"{', '.join(missing)} not found (an image built without the TensorRT layer: TENSORRT=true)"
    return None


@dataclass
class ProviderAttempt:
    """One try of the chain: `provider` first, `chain` = every provider of the session with its options.

    outcome: planned -> active | failed | skipped; `detail` says why."""

    provider: str
    chain: list[tuple[str, dict[str, Any]]]
    outcome: str = "planned"
    detail: str = ""

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.chain[0][1])

    @property
    def on_gpu(self) -> bool:
        return self.provider in GPU_PROVIDERS

    def as_dict(self) -> dict[str, Any]:
        options = {k: str(v) for k, v in self.options.items()}  # as ONNX Runtime reports them: strings
        return {"provider": self.provider, "outcome": self.outcome, "detail": self.detail, "options": options}


@dataclass(frozen=True)
class BatchProfile:
    """What a TensorRT optimisation profile needs: the input's name and size, and the largest batch."""

    input_name: str
    height: int
    width: int
    max_batch: int
    fixed: bool = False

    def shapes(self, batch: int) -> str:
        return f"{self.input_name}:{batch}x3x{self.height}x{self.width}"


@dataclass
class ChainFacts:
    """What the plan depends on, found once at start-up (tests give their own)."""

    available: list[str]
    gpu: GpuPresence
    tensorrt_missing: str | None = None  # None: the TensorRT libraries loaded
    profile: BatchProfile | None = None
    notes: list[str] = field(default_factory=list)


def plan_providers(settings: Settings, facts: ChainFacts) -> list[ProviderAttempt]:
    """The ordered attempts. `auto`: TensorRT (when enabled) and CUDA only on a detected GPU, then the CPU; an
    explicit list is tried as given (CPU always last). An attempt that cannot run is kept as `skipped` with its
    options and the reason, so the start-up log and the reported runtime show the whole chain."""
    auto = settings.execution_providers == ("auto",)
    if auto:
        wanted = ([TENSORRT] if settings.tensorrt_enabled else []) + [CUDA, CPU]
    else:
        wanted = list(settings.execution_providers)
        if CPU not in wanted:
            wanted.append(CPU)
    attempts: list[ProviderAttempt] = []
    for name in wanted:
        chain = [(name, provider_options(name, settings, facts.profile))]
        if name == TENSORRT:  # nodes TensorRT cannot take run on CUDA, with CUDA's own options
            chain.append((CUDA, provider_options(CUDA, settings, None)))
        if name != CPU:
            chain.append((CPU, {}))
        attempt = ProviderAttempt(name, chain)
        attempt.detail = _skip_reason(name, settings, facts, auto) or ""
        attempt.outcome = "skipped" if attempt.detail else "planned"
        attempts.append(attempt)
    return attempts


def _skip_reason(name: str, settings: Settings, facts: ChainFacts, auto: bool) -> str | None:
    if name not in facts.available:
        return "not in this ONNX Runtime build"
    if name == CPU:
        return None
    if auto and not facts.gpu.present:
        return f"no GPU: {facts.gpu.reason}"
    if facts.gpu.present and settings.cuda_device_id >= facts.gpu.count:
        return f"CUDA_DEVICE_ID={settings.cuda_device_id} but only {facts.gpu.count} CUDA device(s) are visible"
    if name == TENSORRT and facts.tensorrt_missing:
        return facts.tensorrt_missing
    return None


def provider_options(name: str, settings: Settings, profile: BatchProfile | None) -> dict[str, Any]:
    if name == TENSORRT:
        cache = settings.state_dir / "tensorrt-cache"
        options: dict[str, Any] = {
            "device_id": settings.cuda_device_id,
            "trt_fp16_enable": settings.tensorrt_fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_max_workspace_size": 2 * 1024**3,
        }
        if profile is not None and not profile.fixed:
            # One engine for every batch the batcher forms; tuned for the full batch it forms under load.
            options["trt_profile_min_shapes"] = profile.shapes(1)
            options["trt_profile_opt_shapes"] = profile.shapes(profile.max_batch)
            options["trt_profile_max_shapes"] = profile.shapes(profile.max_batch)
        return options
    if name == CUDA:
        return {
            "device_id": settings.cuda_device_id,
            # Fixed input shapes: the exhaustive search runs once per shape (at warm-up) and picks the fastest.
            "cudnn_conv_algo_search": "EXHAUSTIVE",
            # Grow the arena by what is asked, not by doubling: a T4 shares its 16 GB with other modules.
            "arena_extend_strategy": "kSameAsRequested",
            "do_copy_in_default_stream": True,
        }
    return {}


def plan_chain(
    settings: Settings, gpu: GpuPresence | None, ort: Any, batch_profile: Callable[[], BatchProfile]
) -> tuple[list[ProviderAttempt], GpuPresence]:
    """The attempts of vision/model.py's provider chain and the GPU they were planned for: the GPU looked for
    when a GPU provider is wanted, CUDA's libraries preloaded, TensorRT's loaded (with the input's profile,
    `batch_profile`) when it is wanted and built in. `ort` is the onnxruntime module (model.py's to import)."""
    s = settings
    auto = s.execution_providers == ("auto",)
    wants_gpu = auto or any(p in GPU_PROVIDERS for p in s.execution_providers)
    wants_trt = s.tensorrt_enabled if auto else TENSORRT in s.execution_providers
    if gpu is None and wants_gpu:
        gpu = detect_gpu(cuda_cache=s.cuda_cache_path)  # the cache path is set before the driver starts
    presence = gpu or GpuPresence(0, "no GPU provider requested")
    facts = ChainFacts(ort.get_available_providers(), presence)
    if wants_gpu and (presence.present or not auto):
        preload_cuda_libraries(ort)
        if wants_trt and TENSORRT in facts.available:
            facts.tensorrt_missing = load_tensorrt_libraries()
            if facts.tensorrt_missing is None:
                facts.profile = batch_profile()
    if auto and not presence.present:
        log.info("no GPU (%s): GPU execution providers skipped (EXECUTION_PROVIDERS=auto)", presence.reason)
    return plan_providers(s, facts), presence


def require_gpu_refusal(settings: Settings, attempts: list[ProviderAttempt]) -> str:
    """Why REQUIRE_GPU=true refuses to start: no GPU provider named, or each one's failure."""
    tried = [a for a in attempts if a.on_gpu]
    if not tried:
        return (
            f"REQUIRE_GPU=true but EXECUTION_PROVIDERS={','.join(settings.execution_providers)} names no GPU provider"
        )
    reasons = "; ".join(f"{a.provider} {a.outcome}: {a.detail}" for a in tried)
    return f"REQUIRE_GPU=true but no GPU execution provider started ({reasons})"
