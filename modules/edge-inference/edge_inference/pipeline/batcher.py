"""The batcher: prepared queue -> batches of up to BATCH_SIZE (or what arrives within BATCH_MAX_WAIT_MS) ->
the one ONNX Runtime session (vision/model.py) -> inferred queue, one envelope per frame with its slice of the
output.

A batch is run at once when nothing else is in the pipe (no frame decoding or waiting to be): holding it open
for frames that will not come only adds latency. Frames that failed before inference pass straight through.
A batch that fails gives each of its frames an `inference_failed` result; `FATAL_BATCH_FAILURES` failed batches
in a row mean the model cannot run any more: the stage dies with `InferenceError` and the module restarts.
"""

from __future__ import annotations

import logging
import queue
import time

import numpy as np

from edge_inference.entities import PreparedFrame
from edge_inference.errors import FrameError, InferenceError
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Failed, Inferred, StageQueues, put_until_stopped, take
from edge_inference.pipeline.prepare import FramePreparer
from edge_inference.settings import Settings
from edge_inference.vision.model import OnnxModel
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

FATAL_BATCH_FAILURES = 3  # consecutive failed inference batches before the stage is declared dead


def batch_limit(settings: Settings, model: OnnxModel) -> int:
    """The largest batch: BATCH_SIZE (auto: by provider) within what the model's batch dimension allows."""
    wanted = settings.effective_batch_size(model.on_gpu)
    return 1 if model.layout == "rows" else max(1, min(wanted, model.max_batch))


class Batcher(Worker):
    """The inference thread (`inference`)."""

    def __init__(
        self,
        settings: Settings,
        model: OnnxModel,
        queues: StageQueues,
        preparer: FramePreparer,
        metrics: MetricsRegistry,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("inference", supervisor, daemon=True)
        self.model = model
        self.queues = queues
        self.preparer = preparer
        self.metrics = metrics
        self.max_batch = batch_limit(settings, model)
        self.max_wait = settings.batch_max_wait_ms / 1000
        self._batch_buffer: np.ndarray | None = None  # the reused batch input (see `_stack`)

    def _more_coming(self) -> bool:
        """Frames are being decoded or wait to be: worth holding a batch open for them."""
        return self.preparer.busy or not self.queues.frames.empty()

    def _pass_on(self, item: Inferred) -> None:
        put_until_stopped(self.queues.inferred, item, lambda: self.stopping)

    def run(self) -> None:
        consecutive_failures = 0
        prepared = self.queues.prepared
        while not self.stopping:
            first = take(prepared)
            if first is None:
                continue
            batch: list[PreparedFrame] = []
            pending: list[PreparedFrame | Failed] = [first]
            deadline = time.monotonic() + self.max_wait
            while True:
                item = pending.pop()
                if isinstance(item, Failed):
                    self._pass_on(Inferred(item, None, item.timings_ms))
                else:
                    batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                remaining = deadline - time.monotonic()
                if remaining > 0 and prepared.empty() and not self._more_coming():
                    break  # nothing else in the pipe: run now rather than wait for a batch that will not fill
                try:
                    pending.append(prepared.get(timeout=remaining) if remaining > 0 else prepared.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                continue
            failure = self._infer(batch)
            if failure is None:
                consecutive_failures = 0
                continue
            consecutive_failures += 1
            if consecutive_failures >= FATAL_BATCH_FAILURES:
                raise InferenceError(
                    f"{consecutive_failures} inference batches failed in a row: {failure}"
                ) from failure

    def _infer(self, batch: list[PreparedFrame]) -> Exception | None:
        """Run one batch and pass each frame on with its output; the exception when the batch failed (each
        frame then gets an `inference_failed` result)."""
        t0 = time.monotonic()
        try:
            tensor = self._stack([p.tensor for p in batch])
            outputs = self.model.run(tensor)
        except Exception as exc:
            log.error("inference failed for a batch of %d: %s", len(batch), exc)
            for p in batch:
                error = FrameError(FrameError.INFERENCE_FAILED, f"inference failed: {exc}")
                self._pass_on(Inferred(Failed(p.job, error, p.timings_ms), None, p.timings_ms))
            return exc
        elapsed = (time.monotonic() - t0) * 1000
        self.metrics.batch_size.observe(len(batch))
        first_output = outputs[0]
        for i, p in enumerate(batch):
            out = first_output if self.model.layout == "rows" else first_output[i]
            self._pass_on(Inferred(p, out, {**p.timings_ms, "inference": elapsed}))
        return None

    def _stack(self, tensors: list[np.ndarray]) -> np.ndarray:
        """One [B, 3, H, W] input from per-frame [1, 3, H, W] tensors, copied into a buffer kept for the next
        batch: a fresh batch-sized array (40 MB at 8 x 640 x 640) is a new mmap whose pages the kernel must fault
        in and zero on every batch. Safe to reuse: one inference thread, and `run` returns before the next."""
        if len(tensors) == 1:
            return tensors[0]
        first = tensors[0]
        shape = (self.max_batch, *first.shape[1:])
        if self._batch_buffer is None or self._batch_buffer.shape != shape or self._batch_buffer.dtype != first.dtype:
            self._batch_buffer = np.empty(shape, dtype=first.dtype)
        out = self._batch_buffer[: len(tensors)]
        np.concatenate(tensors, out=out)
        return out
