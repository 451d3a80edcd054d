"""The batcher: prepared queue -> batches of up to the model's batch size (or what arrives within
BATCH_MAX_WAIT_MS) -> the serving ONNX Runtime session (vision/model.py) -> inferred queue, one envelope per frame
with its slice of the output and the model that made it. A tiled frame's views (its tiles and full-frame pass)
count one each towards the batch: a 4K frame cut in tiles is a batch of its own, its envelope carries every
view's output. Every view of a frame runs on the same model: the model is chosen per batch, a frame is refitted
(all its views) or failed over (all its views) as a whole, so a frame's tiles never split across a swap.

The serving model is read once per batch from vision/serving.py's `ModelSlot`: a model swap falls between two
batches. A frame prepared for another model's input (the one before a swap) is letterboxed again for this one
(`refit`); one that cannot be (a classifier's centre crop) runs on the model it was made for, still loaded. A batch is run at once when nothing else is in the pipe (no frame decoding or waiting to be): holding
it open for frames that will not come only adds latency. Frames that failed before inference pass straight
through. A batch that fails is run again frame by frame, so that only the frame the model cannot take fails
(`inference_failed`). While a newly swapped-in model is on probation, a frame that fails on it is run on the
model before it: its result comes from that model (nothing lost) and the slot counts it (enough in a row roll
the new model back). `FATAL_BATCH_FAILURES` batches in a row in which every frame failed mean the model cannot
run any more: the stage dies with `InferenceError` and the module restarts. A GPU that fails under the session
(`GpuError`) kills the stage at once (unless the model before a swap is at hand and serves): the frames stay
claimed and run again after the restart.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import replace

import numpy as np

from edge_inference.entities import FrameView, PreparedFrame
from edge_inference.errors import FrameError, GpuError, InferenceError
from edge_inference.names import shown
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Failed, Inferred, StageQueues, put_until_stopped, take
from edge_inference.pipeline.prepare import FramePreparer
from edge_inference.settings import Settings
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.serving import ModelSlot, refit
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

FATAL_BATCH_FAILURES = 3  # consecutive failed inference batches before the stage is declared dead

ViewOutputs = tuple[tuple[np.ndarray, ...], ...]  # a frame's outputs, one per view (PreparedFrame.views)


class Batcher(Worker):
    """The inference thread (`inference`)."""

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        queues: StageQueues,
        preparer: FramePreparer,
        metrics: MetricsRegistry,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("inference", supervisor, daemon=True)
        self.slot = slot
        self.queues = queues
        self.preparer = preparer
        self.metrics = metrics
        self.max_wait = settings.batch_max_wait_ms / 1000
        self.busy = False  # a batch is being formed or run (the candidate shadow waits for an idle moment)
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
            self.busy = False
            first = take(prepared)
            if first is None:
                continue
            self.busy = True
            model = self.slot.active  # the swap falls between batches
            limit = model.serving_batch  # the batch sizes it warmed up
            batch: list[PreparedFrame] = []
            pending: list[PreparedFrame | Failed] = [first]
            deadline = time.monotonic() + self.max_wait
            while True:
                item = pending.pop()
                if isinstance(item, Failed):
                    self._pass_on(Inferred(item, None, item.timings_ms))
                elif (fitted := self._fit(item, model)) is not None:
                    batch.append(fitted)
                else:
                    self._run_on_its_own_model(item)
                if sum(1 + len(p.tiles) for p in batch) >= limit:
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
            outputs = self._infer_guarded(model, batch)
            elapsed = (time.monotonic() - t0) * 1000
            self.metrics.batch_size.observe(len(batch))
            done = self._fail_over(model, batch, outputs)
            failures = [out for out, _ in done if isinstance(out, Exception)]
            consecutive_failures = consecutive_failures + 1 if len(failures) == len(batch) else 0
            for p, (out, by) in zip(batch, done, strict=True):
                if isinstance(out, Exception):
                    error = FrameError(FrameError.INFERENCE_FAILED, f"inference failed: {out}"[:500])
                    self._pass_on(Inferred(Failed(p.job, error, p.timings_ms), None, p.timings_ms, model=model))
                else:
                    timings = {**p.timings_ms, "inference": elapsed}
                    self._pass_on(Inferred(by[0], out[0], timings, tile_outputs=out[1:], model=by[1]))
            if consecutive_failures >= FATAL_BATCH_FAILURES:  # the model itself fails, not a frame
                raise InferenceError(f"{consecutive_failures} inference batches failed in a row: {failures[-1]}")

    @staticmethod
    def _fit(frame: PreparedFrame, model: OnnxModel) -> PreparedFrame | None:
        """The frame made for `model`'s input (a frame prepared before a swap is refitted); None when it cannot be
        (a classifier's crop on one side: the model it was made for takes it, `_run_on_its_own_model`). Every view
        is refitted (the ROI crop or full-frame pass and each tile, all made by the same transform); the frame's
        `origin`, `frame_wh` and which view is a tile travel unchanged: the geometry still maps to the frame."""
        fitted = [refit(view.tensor, view.letterbox, frame.transform, model) for view in frame.views]
        if any(f is None for f in fitted):
            return None
        views = [f for f in fitted if f is not None]
        if all(f[0] is view.tensor for f, view in zip(views, frame.views, strict=True)):
            return frame
        (tensor, box), rest = views[0], views[1:]
        tiles = tuple(FrameView(t, b, view.origin, view.tile) for (t, b), view in zip(rest, frame.tiles, strict=True))
        return replace(frame, tensor=tensor, letterbox=box, tiles=tiles, transform=model.transform)

    def _run_on_its_own_model(self, frame: PreparedFrame) -> None:
        """A frame made before a swap for a model whose input cannot be remade from it (a classifier's crop, or
        for one) runs alone on that model, still loaded while the new one is on probation; its result names it."""
        made_for = self.slot.previous
        if made_for is None or made_for.transform != frame.transform:
            message = "inference failed: the frame was made for a model no longer loaded (a second swap)"
            error = FrameError(FrameError.INFERENCE_FAILED, message)
            self._pass_on(Inferred(Failed(frame.job, error, frame.timings_ms), None, frame.timings_ms))
            return
        t0 = time.monotonic()
        out = self._infer_frames(made_for, [frame])[0]
        if isinstance(out, Exception):
            error = FrameError(FrameError.INFERENCE_FAILED, f"inference failed: {out}"[:500])
            failed = Failed(frame.job, error, frame.timings_ms)
            self._pass_on(Inferred(failed, None, frame.timings_ms, model=made_for))
        else:
            timings = {**frame.timings_ms, "inference": (time.monotonic() - t0) * 1000}
            self._pass_on(Inferred(frame, out[0], timings, tile_outputs=out[1:], model=made_for))

    def _infer_guarded(self, model: OnnxModel, batch: list[PreparedFrame]) -> list[ViewOutputs | Exception]:
        """`_infer_frames`; a GPU failure under a model on probation fails its frames (the model before it serves them)
        instead of the stage."""
        try:
            return self._infer_frames(model, batch)
        except GpuError as exc:
            if self.slot.previous is None or model is not self.slot.active:
                raise
            log.error("inference on the new model failed on the GPU (%s): the model before it takes over", exc)
            return [exc] * len(batch)

    def _fail_over(
        self, model: OnnxModel, batch: list[PreparedFrame], outputs: list[ViewOutputs | Exception]
    ) -> list[tuple[ViewOutputs | Exception, tuple[PreparedFrame, OnnxModel]]]:
        """Each frame's outputs and (frame, model) that made them; a frame that failed on a model on probation is
        run on the model before it, every view of it (its tiles never mix two models). The slot hears how the new
        model did."""
        previous = self.slot.previous if model is self.slot.active else None
        done: list[tuple[ViewOutputs | Exception, tuple[PreparedFrame, OnnxModel]]] = []
        failed_over = 0
        for p, out in zip(batch, outputs, strict=True):
            if isinstance(out, Exception) and previous is not None:
                again = self._fit(p, previous)
                retry = self._infer_frames(previous, [again])[0] if again is not None else out
                if again is not None and not isinstance(retry, Exception):
                    failed_over += 1
                    done.append((retry, (again, previous)))
                    continue
            done.append((out, (p, model)))
        served = sum(1 for out in outputs if not isinstance(out, Exception))
        self.slot.record(model, served, failed_over)
        return done

    def _infer_frames(self, model: OnnxModel, batch: list[PreparedFrame]) -> list[ViewOutputs | Exception]:
        """Each frame's outputs on `model`, one per view (PreparedFrame.views: the tiles of a tiled frame run in
        the same batches as the frames beside them, at most the model's batch size at a time), or the exception
        that stands for the frame (the first of its views that failed)."""
        views = [(p, view.tensor) for p in batch for view in p.views]
        limit = model.serving_batch
        outs: list[tuple[np.ndarray, ...] | Exception] = []
        for start in range(0, len(views), limit):
            outs.extend(self._infer(model, views[start : start + limit]))
        results: list[ViewOutputs | Exception] = []
        at = 0
        for p in batch:
            mine = outs[at : at + 1 + len(p.tiles)]
            at += len(mine)
            failed = next((out for out in mine if isinstance(out, Exception)), None)
            results.append(failed if failed is not None else tuple(o for o in mine if not isinstance(o, Exception)))
        return results

    def _infer(
        self, model: OnnxModel, batch: list[tuple[PreparedFrame, np.ndarray]]
    ) -> list[tuple[np.ndarray, ...] | Exception]:
        """Each input's outputs (frame, tensor), or the exception that stands for it. A failed batch is run again
        input by input, so that one frame the model cannot take fails alone. Inputs of different sizes (a model
        padded to its stride, not to a fixed size; tiles beside a full-frame pass) run as one batch per size."""
        if len({tensor.shape for _, tensor in batch}) > 1:
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, (_, tensor) in enumerate(batch):
                by_shape.setdefault(tensor.shape, []).append(i)
            results: list[tuple[np.ndarray, ...] | Exception] = [ValueError()] * len(batch)
            for indices in by_shape.values():
                for i, out in zip(indices, self._infer(model, [batch[i] for i in indices]), strict=True):
                    results[i] = out
            return results
        try:
            outputs = model.run(self._stack([tensor for _, tensor in batch], model.serving_batch))
            if model.layout == "rows":
                return [tuple(outputs)]
            return [tuple(o[i] for o in outputs) for i in range(len(batch))]
        except GpuError:
            raise  # the GPU failed, not these frames: they stay claimed and run again after the restart
        except Exception as exc:
            if len(batch) == 1:
                log.error("inference failed for %s: %s", shown(batch[0][0].job.rel_path), exc)
                return [exc]
            log.warning("inference failed for a batch of %d (%s): running its inputs one by one", len(batch), exc)
            return [self._infer(model, [one])[0] for one in batch]

    def _stack(self, tensors: list[np.ndarray], limit: int) -> np.ndarray:
        """One [B, 3, H, W] input from per-frame [1, 3, H, W] tensors, copied into a buffer kept for the next
        batch: a fresh batch-sized array (40 MB at 8 x 640 x 640) is a new mmap whose pages the kernel must fault
        in and zero on every batch. Safe to reuse: one inference thread, and `run` returns before the next."""
        if len(tensors) == 1:
            return tensors[0]
        first = tensors[0]
        shape = (limit, *first.shape[1:])
        if self._batch_buffer is None or self._batch_buffer.shape != shape or self._batch_buffer.dtype != first.dtype:
            self._batch_buffer = np.empty(shape, dtype=first.dtype)
        out = self._batch_buffer[: len(tensors)]
        np.concatenate(tensors, out=out)
        return out
