"""The model runner: the one place that creates ONNX Runtime sessions.

At start-up it walks the provider chain of providers.py (TensorRT when enabled and its libraries load, CUDA,
CPU): one session per attempt, each with its own provider options and ONNX Runtime's own fallback off, until a
session is made, checked and warmed up. The metadata (model_meta.py) and the first real outputs tell the task and
layout of the head (heads.py), which pick the decoder (postprocess.py) and the input transform (preprocess.py);
then every batch shape the batcher can send is warmed, so cuDNN's algorithm search (or a TensorRT profile) never
stalls the line. What happened to each attempt is logged and reported (`attempts`). When a GPU attempt fails (it
cannot load, or it fails at warm-up) and no GPU provider serves in the end, `gpu_fault` says why: the composition
root raises `gpuLost` for it. `REQUIRE_GPU=true` turns "no GPU provider started" into a refusal to start
(ProviderError, one sentence, exit 2). The boot model is MODEL_PATH (with LABELS_PATH); a model rolled out from
the twin (rollout/) comes from the cache (`path`, its labels, the twin's name and version), through the same chain.

Serving: a run that fails on a GPU provider raises GpuError (the GPU, not the frames, is at fault); IO binding
(a device input per batch shape refilled in place) is available to the smoke test and the benchmark, and off
in the module until a GPU measurement shows it helps (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_inference.entities import ModelInfo
from edge_inference.errors import GpuError, ModelError, ProviderError
from edge_inference.settings import Settings
from edge_inference.vision.classify import looks_like_probabilities
from edge_inference.vision.heads import Head, Layout, read_head
from edge_inference.vision.model_meta import ModelMeta, parse_names, read_meta
from edge_inference.vision.model_spec import InputSpec, file_sha256, model_identity, read_input_spec, read_labels
from edge_inference.vision.postprocess import Decoder
from edge_inference.vision.preprocess import InputTransform
from edge_inference.vision.providers import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    TENSORRT,
    BatchProfile,
    GpuPresence,
    ProviderAttempt,
    plan_chain,
    require_gpu_refusal,
)

__all__ = ["CPU", "CUDA", "GPU_PROVIDERS", "TENSORRT", "InputSpec", "OnnxModel", "parse_names"]

log = logging.getLogger(__name__)


class _AttemptFailed(Exception):
    """This provider could not serve the model; the chain moves on to the next one."""


class _BoundRunner:
    """IO binding: a device-resident input per batch shape, refilled with `update_inplace` (one host-to-device
    copy into memory allocated once), and the outputs bound to host memory (ORT copies them there once).

    The host output is not reused between runs: the dispatcher still holds the previous batch's rows when the
    next batch runs, so a shared buffer would be overwritten under it."""

    def __init__(self, session: Any, input_name: str, output_names: list[str], device: str, device_id: int) -> None:
        self.session = session
        self.input_name = input_name
        self.output_names = output_names
        self.device = device
        self.device_id = device_id
        self._inputs: dict[tuple[tuple[int, ...], str], Any] = {}

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        key = (tuple(batch.shape), batch.dtype.str)
        value = self._inputs.get(key)
        if value is None:
            value = ort.OrtValue.ortvalue_from_shape_and_type(batch.shape, batch.dtype, self.device, self.device_id)
            self._inputs[key] = value
        value.update_inplace(np.ascontiguousarray(batch))
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return outputs


class OnnxModel:
    """One ONNX Runtime session, checked and warmed up; `run` takes a ready NCHW batch. Without `path`: the boot
    model (MODEL_PATH, LABELS_PATH); `sha256`, when the caller checked the file already, saves reading it again."""

    def __init__(
        self,
        settings: Settings,
        *,
        path: Path | None = None,
        labels_path: Path | None = None,
        identity: tuple[str, str] | None = None,
        sha256: str | None = None,
        intra_op_threads: int | None = None,
        io_binding: bool = False,
        gpu: GpuPresence | None = None,
        on_checked: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_checked = on_checked  # told when the checks passed and the warm-up begins (the rollout's state)
        self.path = path or settings.model_path
        self.labels_path = settings.labels_path if path is None else labels_path
        self.identity = identity
        self.source = (
            f"MODEL_PATH {self.path}" if path is None else f"model {identity[0] if identity else self.path.name}"
        )
        if not self.path.is_file():
            raise ModelError(f"{self.source}: no such model file")
        self.sha256 = sha256 or file_sha256(self.path)
        self.threads = intra_op_threads or settings.effective_inference_threads
        self.io_binding = io_binding
        self.gpu_fault: str | None = None
        self.output_shapes: list[tuple[int, ...]] = []
        self.warmed: tuple[int, ...] = ()
        self.frame_cost_ms: float | None = None  # smoothed model time per frame (the decode pool sizes itself by it)
        self.attempts = self._plan(gpu)
        self._walk_chain()

    # -- the provider chain ----------------------------------------------------------------------------------
    def _plan(self, gpu: GpuPresence | None) -> list[ProviderAttempt]:
        attempts, self.gpu_presence = plan_chain(self.settings, gpu, ort, self._batch_profile)
        return attempts

    def _batch_profile(self) -> BatchProfile:
        """The input's name and size for TensorRT's profile, read from a light CPU session (no optimisation)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            probe = ort.InferenceSession(str(self.path), sess_options=options, providers=[CPU])
        except Exception as exc:
            raise ModelError(f"{self.source}: ONNX Runtime cannot load it: {_first_line(exc)}") from None
        meta = read_meta(dict(probe.get_modelmeta().custom_metadata_map or {}))
        spec = read_input_spec(list(probe.get_inputs()), meta)
        batch = spec.batch or self.settings.effective_batch_size(True)
        return BatchProfile(spec.name, spec.height, spec.width, batch, fixed=spec.batch is not None)

    def _walk_chain(self) -> None:
        s = self.settings
        for attempt in self.attempts:
            if attempt.outcome == "skipped":
                log.info("execution provider %s skipped: %s", attempt.provider, attempt.detail)
                continue
            if s.require_gpu and not attempt.on_gpu:
                break  # REQUIRE_GPU: never start on the CPU
            try:
                self._start(attempt)
            except _AttemptFailed as exc:
                attempt.outcome, attempt.detail = "failed", str(exc)
                if attempt.on_gpu:
                    self.gpu_fault = f"{attempt.provider}: {exc}"
                log.warning("execution provider %s failed: %s", attempt.provider, exc)
                continue
            attempt.outcome = "active"
            if self.on_gpu:
                self.gpu_fault = None  # TensorRT failed but CUDA serves: the GPU is not lost (the chain says why)
            log.info(
                "execution provider: %s (chain: %s)",
                self.provider,
                ", ".join(f"{a.provider} {a.outcome}" for a in self.attempts),
            )
            return
        raise ProviderError(require_gpu_refusal(self.settings, self.attempts))

    def _start(self, attempt: ProviderAttempt) -> None:
        """Make the session of one attempt, check the model, and warm every batch shape up."""
        session = self._session(attempt)
        self.session = session
        self.active_providers = tuple(session.get_providers())
        self.provider = self.active_providers[0]
        meta = session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})
        self.meta: ModelMeta = read_meta(self.metadata)
        self.input = read_input_spec(list(session.get_inputs()), self.meta)
        self.output_names = [o.name for o in session.get_outputs()]
        self.name, self.version = self.identity or model_identity(
            self.metadata, meta.graph_name, meta.version, self.path
        )
        self.class_names = self._class_names()
        device = "cuda" if attempt.on_gpu else "cpu"
        self._bound = _BoundRunner(session, self.input.name, self.output_names, device, self.settings.cuda_device_id)
        if self.on_checked is not None:
            self.on_checked()
        self._warm_up(attempt)

    def _session(self, attempt: ProviderAttempt) -> Any:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Decode threads share the cores with inference: idle ORT threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(self.path),
                sess_options=options,
                providers=[name for name, _ in attempt.chain],
                provider_options=[opts for _, opts in attempt.chain],
                enable_fallback=0,  # this chain is the fallback: ORT's own retry would drop the options
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeError types
            if attempt.on_gpu:
                raise _AttemptFailed(f"session not created: {_first_line(exc)}") from None
            raise ModelError(f"{self.source}: ONNX Runtime cannot load it: {_first_line(exc)}") from None
        session.disable_fallback()  # and no silent move to the CPU at run time either
        active = session.get_providers()[0]
        if active != attempt.provider:
            raise _AttemptFailed(f"ONNX Runtime could not load it (session came up on {active}; its log says why)")
        return session

    def _class_names(self) -> tuple[str, ...]:
        if self.labels_path is not None:
            return read_labels(self.labels_path)
        return self.meta.names or ()

    def _warm_up(self, attempt: ProviderAttempt) -> None:
        started = time.monotonic()
        first_batch = self.input.batch or 1
        outputs = self._warm_run(attempt, first_batch)
        self._read_head(outputs)
        for batch in self.batch_shapes:
            if batch != first_batch:
                self._warm_run(attempt, batch)
        self.warmed = self.batch_shapes
        log.info(
            "model %s %s ready on %s: input %s %s %dx%d (%s batch), %s, %d classes; batch sizes %s warmed in %.1f s",
            self.name,
            self.version,
            self.provider,
            self.input.name,
            self.input.dtype,
            self.input.width,
            self.input.height,
            "dynamic" if self.input.batch is None else f"fixed {self.input.batch}",
            self.head.describe(self.output_shapes),
            len(self.class_names),
            ",".join(map(str, self.warmed)),
            time.monotonic() - started,
        )

    def _warm_run(self, attempt: ProviderAttempt, batch: int) -> list[np.ndarray]:
        x = np.full((batch, 3, self.input.height, self.input.width), 114 / 255, dtype=self.input.dtype)
        try:
            return self._run_session(x)
        except Exception as exc:
            if attempt.on_gpu:
                raise _AttemptFailed(f"warm-up at batch {batch} failed: {_first_line(exc)}") from None
            raise ModelError(
                f"the model fails to run on {attempt.provider} at batch {batch}: {_first_line(exc)}"
            ) from None

    def _read_head(self, outputs: list[np.ndarray]) -> None:
        """The task and layout from the metadata and the first real outputs; the class names checked against
        them; the decoder and the input transform for this head."""
        if not outputs:
            raise ModelError("the model has no outputs")
        self.output_shapes = [tuple(o.shape) for o in outputs]
        names = len(self.class_names) or None
        self.head: Head = read_head(self.meta, self.output_shapes, names, labels_file=self.labels_path is not None)
        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(self.head.num_classes or 0))
        logits = False
        if self.head.task == "classify":
            # an Ultralytics classifier ends in a softmax; another tool's may end in logits (decided on two inputs)
            x = np.linspace(0, 1, 3 * self.input.height * self.input.width, dtype=np.float32)
            x = x.reshape(1, 3, self.input.height, self.input.width).astype(self.input.dtype)
            if self.input.batch:
                x = np.repeat(x, self.input.batch, axis=0)
            rows = np.concatenate([outputs[0][:1], self._run_session(x)[0][:1]])
            logits = not looks_like_probabilities(rows)
        self.decoder = Decoder(self.head, self.class_names, self.input_hw, logits=logits)
        rect = self.input.dynamic_size and self.provider != TENSORRT  # TensorRT's profile fixes the size
        self.transform = InputTransform.for_task(self.head.task, self.input, (self.meta.stride or 32) if rect else None)

    # -- serving -------------------------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return self.head.layout

    @property
    def task(self) -> str:
        return self.head.task

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.input.height, self.input.width

    @property
    def max_batch(self) -> int:
        return self.input.batch if self.input.batch is not None else self.settings.effective_batch_size(self.on_gpu)

    @property
    def serving_batch(self) -> int:
        """The largest batch the batcher forms: BATCH_SIZE (or its default for the provider), at most a fixed
        batch, and 1 for the row layout (its [N, 6] output has no batch axis to split)."""
        if self.layout == "rows":
            return 1
        return max(1, min(self.settings.effective_batch_size(self.on_gpu), self.max_batch))

    @property
    def batch_shapes(self) -> tuple[int, ...]:
        """Every batch size the session is ever run with: a fixed batch (smaller batches are padded to it), or
        1..serving_batch for a dynamic one."""
        if self.input.batch is not None:
            return (self.input.batch,)
        return tuple(range(1, self.serving_batch + 1))

    @property
    def pci_bus_id(self) -> str | None:
        """The PCI bus id of the CUDA device in use (NVML finds the same card by it), when the driver said."""
        ids, index = self.gpu_presence.pci_bus_ids, self.settings.cuda_device_id
        return ids[index] if self.on_gpu and index < len(ids) else None

    @property
    def on_gpu(self) -> bool:
        return self.provider in GPU_PROVIDERS

    @functools.cached_property
    def class_ids(self) -> dict[str, int]:
        """Class name -> class id (the twin's `classes` filter names classes)."""
        return {name: i for i, name in enumerate(self.class_names)}

    def info(self) -> ModelInfo:
        """What a result says about the model that made it."""
        return ModelInfo(self.name, self.version, self.provider, self.sha256, self.task)

    def describe(self) -> dict[str, str]:
        """The model's identity as the twin and getStatus show it."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run a [B, 3, H, W] batch; a fixed-batch model gets the batch padded to its size. On a GPU provider
        a failing run raises GpuError: the inputs are shapes that all ran at warm-up, so the GPU is at fault."""
        n = batch.shape[0]
        started = time.monotonic()
        fixed = self.input.batch
        if fixed is not None and n != fixed:
            if n > fixed:
                raise ValueError(f"batch of {n} for a model with fixed batch {fixed}")
            pad = np.zeros((fixed - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        try:
            outputs = self._run_session(batch)
        except Exception as exc:
            if self.on_gpu:
                raise GpuError(f"inference failed on {self.provider}: {_first_line(exc)}") from exc
            raise
        per_frame = (time.monotonic() - started) * 1000 / n
        cost = self.frame_cost_ms
        self.frame_cost_ms = per_frame if cost is None else 0.8 * cost + 0.2 * per_frame
        if self.layout == "rows":
            return outputs
        return [o[:n] for o in outputs]

    def _run_session(self, batch: np.ndarray) -> list[np.ndarray]:
        if self.io_binding:
            return self._bound.run(batch)
        outputs: list[np.ndarray] = self.session.run(self.output_names, {self.input.name: batch})
        return outputs

    def provider_options(self) -> dict[str, dict[str, str]]:
        """The options ONNX Runtime reports for the active providers (the smoke test prints them)."""
        return {k: dict(v) for k, v in self.session.get_provider_options().items()}

    def runtime_info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "providers": list(self.active_providers),
            "providerChain": [a.as_dict() for a in self.attempts],
            "model": {**self.describe(), "path": os.path.basename(self.path)},
            "inputShape": [self.input.batch or -1, 3, self.input.height, self.input.width],
            "inputType": str(self.input.dtype),
            "task": self.head.task,
            "outputLayout": self.layout,
            "outputShapes": [
                [-1 if i == 0 and self.head.batched else d for i, d in enumerate(s)] for s in self.output_shapes
            ],
            "nmsInGraph": self.layout in ("end2end", "rows"),
            "warmedBatchSizes": list(self.warmed),
            "classes": list(self.class_names),
            "onnxruntime": ort.__version__,
        }


def build_info() -> dict[str, Any]:
    """This ONNX Runtime: version, the CUDA it was built with, and the providers the build has."""
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:
        cuda_version = None
    return {"onnxruntime": ort.__version__, "cudaBuild": cuda_version, "available": ort.get_available_providers()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
