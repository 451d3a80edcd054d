"""The model runner: the one place that touches ONNX Runtime.

At start-up it picks the execution providers (TensorRT when enabled, CUDA, CPU, limited to those this
build has), checks the model's inputs and outputs and fails with one clear sentence when it cannot serve
them, reads the class names, and warms the session up once; the first real output tells the layout.
ONNX Runtime falls back to the CPU by itself when a GPU provider cannot load (no driver, wrong CUDA), so
the active provider is read back from the session, logged, and reported; `REQUIRE_GPU=true` turns that
fallback into a refusal to start.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_inference.errors import ModelError, ProviderError
from edge_inference.settings import Settings
from edge_inference.vision import postprocess

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def nvidia_driver_present() -> bool:
    """True when the NVIDIA kernel driver is loaded (the container sees it through the GPU device request)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def plan_providers(
    settings: Settings, available: list[str], *, driver_present: bool | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Providers to ask for, in order, with their options; only those this ONNX Runtime build has.

    `auto` asks for GPU providers only when an NVIDIA driver is present (no noisy load failures on CPU
    hosts); an explicit list is tried as given, and ONNX Runtime's fallback is then reported."""
    if settings.execution_providers == ("auto",):
        gpu = nvidia_driver_present() if driver_present is None else driver_present
        if not gpu:
            log.info("no NVIDIA driver found: GPU execution providers skipped (EXECUTION_PROVIDERS=auto)")
        wanted = (([TENSORRT] if settings.tensorrt_enabled else []) + [CUDA] if gpu else []) + [CPU]
    else:
        wanted = list(settings.execution_providers)
    if CPU not in wanted:
        wanted.append(CPU)  # ONNX Runtime always keeps a CPU fallback; make it explicit
    plan: list[tuple[str, dict[str, Any]]] = []
    for name in wanted:
        if name not in available:
            log.info("execution provider %s is not in this ONNX Runtime build; skipped", name)
            continue
        plan.append((name, provider_options(name, settings)))
    return plan


def provider_options(name: str, settings: Settings) -> dict[str, Any]:
    if name == TENSORRT:
        cache = settings.state_dir / "tensorrt-cache"
        return {
            "device_id": settings.cuda_device_id,
            "trt_fp16_enable": settings.tensorrt_fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_max_workspace_size": 2 * 1024**3,
        }
    if name == CUDA:
        return {
            "device_id": settings.cuda_device_id,
            # Fixed input shapes: the exhaustive search runs once per shape and picks the fastest kernels.
            "cudnn_conv_algo_search": "EXHAUSTIVE",
            # Grow the arena by what is asked, not by doubling: a T4 shares its 16 GB with other modules.
            "arena_extend_strategy": "kSameAsRequested",
            "do_copy_in_default_stream": True,
        }
    return {}


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype[Any]
    height: int
    width: int
    batch: int | None  # None: dynamic batch axis


def parse_names(text: str) -> tuple[str, ...]:
    """Class names from metadata: a Python dict literal (Ultralytics), JSON, a list, or a comma list."""
    text = text.strip()
    value: Any
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            value = json.loads(text)
        except ValueError:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, dict):
        try:
            ordered = sorted(((int(k), str(v)) for k, v in value.items()), key=lambda kv: kv[0])
        except (TypeError, ValueError):
            raise ModelError(f"model metadata `names` has non-integer keys: {text[:80]!r}") from None
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise ModelError("model metadata `names` must number the classes 0..C-1")
        return tuple(v for _, v in ordered)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise ModelError(f"model metadata `names` is not a dict or list: {text[:80]!r}")


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ModelError(f"LABELS_PATH {path}: cannot read: {exc.strerror}") from None
    names = [n for n in names if n]
    if not names:
        raise ModelError(f"LABELS_PATH {path}: no class names in it (one per line)")
    return tuple(names)


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxModel:
    """One ONNX Runtime session, checked and warmed up; `run` takes a ready NCHW batch."""

    def __init__(
        self, settings: Settings, *, intra_op_threads: int | None = None, io_binding: bool | None = None
    ) -> None:
        self.settings = settings
        path = settings.model_path
        if not path.is_file():
            raise ModelError(f"MODEL_PATH {path}: no such model file")
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self.requested = plan_providers(settings, ort.get_available_providers())
        if any(name in GPU_PROVIDERS for name, _ in self.requested):
            _preload_cuda_libraries()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = intra_op_threads or settings.effective_inference_threads
        options.inter_op_num_threads = 1
        # Decode threads share the cores with inference: idle ORT threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path),
                sess_options=options,
                providers=[name for name, _ in self.requested],
                provider_options=[opts for _, opts in self.requested],
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelError(f"MODEL_PATH {path}: ONNX Runtime cannot load it: {exc}") from None
        self.active_providers = tuple(self.session.get_providers())
        self.provider = self.active_providers[0]
        # On a GPU, IO binding copies the batch to the device once and writes the output straight into host
        # memory, instead of session.run's extra staging copies; on the CPU it gains nothing.
        self.io_binding = self.provider in GPU_PROVIDERS if io_binding is None else io_binding
        self._check_provider()
        self.input = self._check_input()
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})
        self.name = self.metadata.get("name") or meta.graph_name or path.stem
        if self.name in ("main_graph", "torch_jit", "torch-jit-export", "graph"):
            self.name = path.stem
        self.version = self.metadata.get("version") or str(meta.version or "") or "unknown"
        self.class_names = self._class_names()
        self.layout: postprocess.Layout = "yolov8"
        self.output_shape: tuple[int, ...] = ()
        self._warm_up()

    # -- start-up checks -------------------------------------------------------------------------------------
    def _check_provider(self) -> None:
        wanted = [name for name, _ in self.requested]
        if wanted and wanted[0] != self.provider:
            log.warning(
                "execution provider %s could not start (see ONNX Runtime's message above); running on %s",
                wanted[0],
                self.provider,
            )
        log.info("execution provider: %s (requested %s)", self.provider, ", ".join(wanted))
        if self.settings.require_gpu and self.provider not in GPU_PROVIDERS:
            raise ProviderError(
                f"REQUIRE_GPU=true but no GPU execution provider is active (active: {self.provider}; "
                f"requested: {', '.join(wanted)}): check the NVIDIA driver, the container's GPU access and CUDA 12"
            )

    def _check_input(self) -> InputSpec:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise ModelError(f"the model has {len(inputs)} inputs ({names}); edge-inference serves one image input")
        spec = inputs[0]
        shape = list(spec.shape)
        if len(shape) != 4:
            raise ModelError(
                f"model input '{spec.name}' has rank {len(shape)} (shape {shape}); expected an image batch [B, 3, H, W]"
            )
        if spec.type not in _DTYPES:
            raise ModelError(f"model input '{spec.name}' has type {spec.type}; expected float32 or float16")
        channels = _dim(shape[1])
        if channels != 3:
            hint = " (it looks NHWC; export the model as NCHW)" if _dim(shape[3]) == 3 else ""
            raise ModelError(f"model input '{spec.name}' has shape {shape}; expected [B, 3, H, W]{hint}")
        height, width = _dim(shape[2]), _dim(shape[3])
        if height is None or width is None:
            imgsz = self._meta_imgsz()
            if imgsz is None:
                raise ModelError(
                    f"model input '{spec.name}' has a dynamic size {shape} and no `imgsz` metadata; export it with a fixed size"
                )
            height, width = imgsz
        return InputSpec(spec.name, np.dtype(_DTYPES[spec.type]), height, width, _dim(shape[0]))

    def _meta_imgsz(self) -> tuple[int, int] | None:
        meta = dict(self.session.get_modelmeta().custom_metadata_map or {})
        raw = meta.get("imgsz")
        if not raw:
            return None
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
        if isinstance(value, int):
            return value, value
        if isinstance(value, list | tuple) and len(value) == 2:
            return int(value[0]), int(value[1])
        return None

    def _class_names(self) -> tuple[str, ...]:
        if self.settings.labels_path is not None:
            return read_labels(self.settings.labels_path)
        raw = self.metadata.get("names")
        return parse_names(raw) if raw else ()

    def _warm_up(self) -> None:
        outputs = self.run(np.full((1, 3, self.input.height, self.input.width), 114 / 255, dtype=self.input.dtype))
        if not outputs:
            raise ModelError("the model has no outputs")
        first = outputs[0]
        end2end_meta = self.metadata.get("end2end")
        end2end = None if end2end_meta is None else end2end_meta.strip().lower() in ("true", "1")
        self.output_shape = tuple(first.shape)
        num_classes = len(self.class_names) or None
        try:
            self.layout = postprocess.detect_layout(self.output_shape, num_classes, end2end)
        except ModelError:
            if num_classes is None:
                raise
            self.layout = postprocess.detect_layout(self.output_shape, None, end2end)
        encoded = postprocess.classes_in(self.layout, self.output_shape)
        if not self.class_names:
            count = encoded if encoded is not None else 0
            self.class_names = tuple(str(i) for i in range(count))
        elif encoded is not None and encoded != len(self.class_names):
            raise ModelError(
                f"the model outputs {encoded} classes but {len(self.class_names)} class names were given"
                f" ({'LABELS_PATH' if self.settings.labels_path else 'metadata names'})"
            )
        log.info(
            "model %s %s ready: input %s %s %dx%d (%s batch), output %s layout %s, %d classes",
            self.name,
            self.version,
            self.input.name,
            self.input.dtype,
            self.input.width,
            self.input.height,
            "dynamic" if self.input.batch is None else f"fixed {self.input.batch}",
            list(self.output_shape),
            self.layout,
            len(self.class_names),
        )

    # -- serving -------------------------------------------------------------------------------------------
    @property
    def input_hw(self) -> tuple[int, int]:
        return self.input.height, self.input.width

    @property
    def max_batch(self) -> int:
        return self.input.batch if self.input.batch is not None else self.settings.effective_batch_size(self.on_gpu)

    @property
    def on_gpu(self) -> bool:
        return self.provider in GPU_PROVIDERS

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a [B, 3, H, W] batch; a fixed-batch model gets the batch padded to its size."""
        n = batch.shape[0]
        fixed = self.input.batch
        if fixed is not None and n != fixed:
            if n > fixed:
                raise ValueError(f"batch of {n} for a model with fixed batch {fixed}")
            pad = np.zeros((fixed - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        if self.io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input.name, np.ascontiguousarray(batch))
            binding.bind_output(self.output_names[0], "cpu")
            self.session.run_with_iobinding(binding)
            outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
        else:
            outputs = self.session.run(self.output_names[:1], {self.input.name: batch})
        if self.layout == "rows":
            return outputs
        return [o[:n] for o in outputs]

    def runtime_info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "providers": list(self.active_providers),
            "model": {
                "name": self.name,
                "version": self.version,
                "sha256": self.sha256,
                "path": os.path.basename(self.settings.model_path),
            },
            "inputShape": [self.input.batch or -1, 3, self.input.height, self.input.width],
            "inputType": str(self.input.dtype),
            "outputLayout": self.layout,
            "classes": list(self.class_names),
            "onnxruntime": ort.__version__,
        }


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels when present (slim images carry CUDA that way)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # best effort: system CUDA libraries may be found anyway
        log.debug("onnxruntime.preload_dlls() did not load CUDA libraries: %s", exc)
