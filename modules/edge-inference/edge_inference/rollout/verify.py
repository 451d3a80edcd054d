"""Verify a model before it serves: a second session beside the one serving, the same providers, its start-up
checks, the GPU's free memory first, warm-up, and the self-test frame through it.

    ModelVerifier.load(file, ...)   -> OnnxModel, checked and warmed, not yet serving; or RolloutError:
        GPU memory      on a GPU, NVML's free memory must cover GPU_MEMORY_FACTOR x the file + GPU_MEMORY_HEADROOM_MB
                        before the session is made (else ac 500: the model in force keeps its memory)
        start-up checks vision/model.py: one image input [B, 3, H, W], an output layout it can read, class names
                        that fit the output, every batch size warmed (a ModelError is ac 400)
        providers       it must come up on the provider the serving model runs on (a GPU model that only
                        starts on the CPU is refused, ac 500)
        self-test       models/selftest.jpg through the new session; with the demo classes every known
                        defect must be found, else the round trip must work (ac 400)
The serving model is untouched by all of this: a refusal leaves it serving as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_inference.control.selftest import SELFTEST_FRAME, judge, truth_of
from edge_inference.errors import FrameError, ModelError, ProviderError, RolloutError
from edge_inference.settings import Settings
from edge_inference.vision import decode as decoding
from edge_inference.vision import postprocess
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.preprocess import prepare_frame
from edge_inference.vision.serving import ModelSlot, decode, run_one

log = logging.getLogger(__name__)

GPU_MEMORY_FACTOR = 3  # weights, plus ONNX Runtime's arena and the warm-up batches' activations
GPU_MEMORY_HEADROOM_MB = 512


class ModelVerifier:
    """Loads, checks and warms models for the rollout and the candidate. `nvml` replaces `pynvml` (tests)."""

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        *,
        nvml: ModuleType | Any | None = None,
        selftest_frame: Path = SELFTEST_FRAME,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self._nvml = nvml
        self.selftest_frame = selftest_frame

    def load(
        self,
        file: Path,
        *,
        labels: Path | None,
        identity: tuple[str, str],
        sha256: str,
        threads: int | None = None,
        strict: bool = True,
        on_checked: Callable[[], None] | None = None,
    ) -> OnnxModel:
        """The model checked and warmed. `strict`: a self-test that misses known defects refuses it (a
        candidate, still under evaluation, must only get through the round trip)."""
        serving = self.slot.active
        if serving.on_gpu:
            self.check_gpu_memory(file.stat().st_size, serving.pci_bus_id)
        try:
            model = OnnxModel(
                self.settings,
                path=file,
                labels_path=labels,
                identity=identity,
                sha256=sha256,
                intra_op_threads=threads,
                gpu=serving.gpu_presence,
                on_checked=on_checked,
            )
        except ProviderError as exc:
            raise RolloutError(f"no execution provider started it: {exc}", 500) from None
        except ModelError as exc:
            raise RolloutError(f"the module cannot serve it: {exc}", 400) from None
        except Exception as exc:  # ONNX Runtime's own error types, a file read failing
            raise RolloutError(f"loading it failed: {type(exc).__name__}: {str(exc)[:300]}", 500) from None
        if model.provider != serving.provider:
            chain = ", ".join(f"{a.provider} {a.outcome}" for a in model.attempts)
            raise RolloutError(f"it started on {model.provider}, not on {serving.provider} ({chain})", 500)
        self.self_test(model, strict=strict)
        return model

    def load_boot(self) -> OnnxModel:
        """MODEL_PATH again (a rollback to the boot model), on the serving model's providers."""
        try:
            return OnnxModel(self.settings, gpu=self.slot.active.gpu_presence)
        except (ModelError, ProviderError) as exc:
            raise RolloutError(f"MODEL_PATH cannot be loaded again: {exc}", 500) from None

    def self_test(self, model: OnnxModel, *, strict: bool = True) -> dict[str, Any]:
        """The self-test frame through `model` alone; RolloutError (400) when it fails."""
        s = self.settings
        try:
            data = self.selftest_frame.read_bytes()
            frame = decoding.decode_frame(data, s.max_image_pixels)
            tensor, box = prepare_frame(frame.image, (frame.width, frame.height), model.transform)
            output, box = run_one(model, tensor, box, model.transform)
            options = postprocess.DecodeOptions(
                s.confidence_threshold, s.iou_threshold, s.max_detections, s.agnostic_nms
            )
            found = decode(model, output, box, options).detections
        except (FrameError, OSError) as exc:
            raise RolloutError(f"the self-test frame cannot be read: {exc}", 500) from None
        except Exception as exc:
            raise RolloutError(
                f"the self-test frame fails on it: {type(exc).__name__}: {str(exc)[:300]}", 400
            ) from None
        verdict = judge(True, found, model.class_names, truth_of(self.selftest_frame))
        if strict and not verdict["passed"]:
            raise RolloutError(
                f"self-test failed: {verdict.get('found')} of {verdict.get('expected')} known defects found", 400
            )
        log.info("model %s %s self-test: %s (%s)", model.name, model.version, verdict["passed"], verdict["check"])
        return verdict

    def check_gpu_memory(self, file_bytes: int, pci_bus_id: str | None) -> None:
        """Refuse (500) when NVML says the GPU has too little free memory for a second session; a GPU whose
        NVML does not answer is not refused (the session itself then says whether it fits)."""
        need = file_bytes * GPU_MEMORY_FACTOR + GPU_MEMORY_HEADROOM_MB * 1024 * 1024
        free = self._free_gpu_bytes(pci_bus_id)
        if free is None:
            return
        if free < need:
            raise RolloutError(
                f"GPU memory: {free / 1048576:.0f} MB free, about {need / 1048576:.0f} MB needed to load it beside"
                " the model serving",
                500,
            )

    def _free_gpu_bytes(self, pci_bus_id: str | None) -> int | None:
        try:
            nvml = self._nvml
            if nvml is None:
                import pynvml

                nvml = pynvml
            nvml.nvmlInit()
        except Exception as exc:  # no driver, no library
            log.warning("NVML unavailable (%s): GPU memory not checked before loading", type(exc).__name__)
            return None
        try:
            index = self.settings.cuda_device_id
            handle = (
                nvml.nvmlDeviceGetHandleByPciBusId_v2(pci_bus_id)
                if pci_bus_id
                else nvml.nvmlDeviceGetHandleByIndex(index)
            )
            return int(nvml.nvmlDeviceGetMemoryInfo(handle).free)
        except Exception as exc:
            log.warning("NVML could not read the GPU's memory (%s): not checked before loading", type(exc).__name__)
            return None
        finally:
            try:
                nvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
