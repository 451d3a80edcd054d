"""The batcher: prepared queue -> batches of up to BATCH_SIZE (or what arrives within BATCH_MAX_WAIT_MS) ->
the one ONNX Runtime session (vision/model.py) -> inferred queue, one envelope per frame with its slice of the
output. A tiled frame's views (its tiles and full-frame pass) count one each towards the batch: a 4K frame cut
in tiles is a batch of its own, its envelope carries every view's output.

A batch is run at once when nothing else is in the pipe (no frame decoding or waiting to be): holding it open
for frames that will not come only adds latency. Frames that failed before inference pass straight through.
A batch that fails is run again frame by frame, so that only the frame the model cannot take fails
(`inference_failed`); `FATAL_BATCH_FAILURES` batches in a row in which every frame failed mean the model cannot
run any more: the stage dies with `InferenceError` and the module restarts. A GPU that fails under the session
(`GpuError`) kills the stage at once: the frames stay claimed and run again after the restart.
"""

from __future__ import annotations

import logging
import queue
import time

import numpy as np

from edge_inference.entities import PreparedFrame
from edge_inference.errors import FrameError, GpuError, InferenceError
from edge_inference.names import shown
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Failed, Inferred, StageQueues, put_until_stopped, take
from edge_inference.pipeline.prepare import FramePreparer
from edge_inference.settings import Settings
from edge_inference.vision.model import OnnxModel
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

FATAL_BATCH_FAILURES = 3  # consecutive failed inference batches before the stage is declared dead


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
        self.max_batch = model.serving_batch  # the batch sizes the model warmed up
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
                if sum(1 + len(p.tiles) for p in batch) >= self.max_batch:
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
            t0 = time.monotonic()
            outputs = self._infer_frames(batch)
            elapsed = (time.monotonic() - t0) * 1000
            self.metrics.batch_size.observe(len(batch))
            failures = [out for out in outputs if isinstance(out, Exception)]
            consecutive_failures = consecutive_failures + 1 if len(failures) == len(batch) else 0
            for p, out in zip(batch, outputs, strict=True):
                if isinstance(out, Exception):
                    error = FrameError(FrameError.INFERENCE_FAILED, f"inference failed: {out}"[:500])
                    self._pass_on(Inferred(Failed(p.job, error, p.timings_ms), None, p.timings_ms))
                else:
                    self._pass_on(Inferred(p, out[0], {**p.timings_ms, "inference": elapsed}, out[1:]))
            if consecutive_failures >= FATAL_BATCH_FAILURES:  # the model itself fails, not a frame
                raise InferenceError(f"{consecutive_failures} inference batches failed in a row: {failures[-1]}")

    def _infer_frames(self, batch: list[PreparedFrame]) -> list[tuple[tuple[np.ndarray, ...], ...] | Exception]:
        """Each frame's outputs, one per view (PreparedFrame.views: the tiles of a tiled frame run in the same
        batches as the frames beside them, at most the model's batch size at a time), or the exception that
        stands for the frame (the first of its views that failed)."""
        views = [(p, view.tensor) for p in batch for view in p.views]
        outs: list[tuple[np.ndarray, ...] | Exception] = []
        for start in range(0, len(views), self.max_batch):
            outs.extend(self._infer(views[start : start + self.max_batch]))
        results: list[tuple[tuple[np.ndarray, ...], ...] | Exception] = []
        at = 0
        for p in batch:
            mine = outs[at : at + 1 + len(p.tiles)]
            at += len(mine)
            failed = next((out for out in mine if isinstance(out, Exception)), None)
            results.append(failed if failed is not None else tuple(o for o in mine if not isinstance(o, Exception)))
        return results

    def _infer(self, batch: list[tuple[PreparedFrame, np.ndarray]]) -> list[tuple[np.ndarray, ...] | Exception]:
        """Each input's outputs (frame, tensor), or the exception that stands for it. A failed batch is run again
        input by input, so that one frame the model cannot take fails alone. Inputs of different sizes (a model
        padded to its stride, not to a fixed size; tiles beside a full-frame pass) run as one batch per size."""
        if len({tensor.shape for _, tensor in batch}) > 1:
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, (_, tensor) in enumerate(batch):
                by_shape.setdefault(tensor.shape, []).append(i)
            results: list[tuple[np.ndarray, ...] | Exception] = [ValueError()] * len(batch)
            for indices in by_shape.values():
                for i, out in zip(indices, self._infer([batch[i] for i in indices]), strict=True):
                    results[i] = out
            return results
        try:
            outputs = self.model.run(self._stack([tensor for _, tensor in batch]))
            if self.model.layout == "rows":
                return [tuple(outputs)]
            return [tuple(o[i] for o in outputs) for i in range(len(batch))]
        except GpuError:
            raise  # the GPU failed, not these frames: they stay claimed and run again after the restart
        except Exception as exc:
            if len(batch) == 1:
                log.error("inference failed for %s: %s", shown(batch[0][0].job.rel_path), exc)
                return [exc]
            log.warning("inference failed for a batch of %d (%s): running its inputs one by one", len(batch), exc)
            return [self._infer([one])[0] for one in batch]

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
