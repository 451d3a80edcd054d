"""The decode pool: frames queue -> read, decode, letterbox (vision/) -> prepared queue.

`FramePreparer` turns one job into a `PreparedFrame` (tensor, letterbox geometry, sha256, the decoded image when
annotation is wanted) or a `Failed` envelope with the frame's error; a file that cannot be read because its share
went away is marked `vanished` (not the frame's fault: it stays claimed). It serves the decode workers and the
/predict callers alike, and counts the frames inside it so that the batcher knows more are coming.
`PrepareWorker` is one decode thread (`decode-<i>`); DECODE_WORKERS of them run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time

from edge_inference.entities import FrameJob, PreparedFrame
from edge_inference.errors import FrameError
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.pipeline.envelopes import Failed, StageQueues, put_until_stopped, take
from edge_inference.settings import Settings
from edge_inference.share.guard import ShareGuard
from edge_inference.vision import decode as decoding
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.preprocess import prepare_frame
from edge_inference.workers import Supervisor, Worker

DECODE_NICE_ON_CPU = 5  # decode threads' niceness when inference runs on the CPU (see PrepareWorker.setup)


class FramePreparer:
    """Bytes (from the share or a request) to a letterboxed tensor; never raises for a bad frame."""

    def __init__(self, settings: Settings, model: OnnxModel, live: LiveSettings, guard: ShareGuard) -> None:
        self.settings = settings
        self.model = model
        self.live = live
        self.guard = guard
        self._lock = threading.Lock()
        self._busy = 0  # frames inside `prepare` right now (decode workers and /predict callers)

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def prepare(self, job: FrameJob, keep_image: bool | None = None) -> PreparedFrame | Failed:
        with self._lock:
            self._busy += 1
        try:
            return self._prepare(job, keep_image)
        finally:
            with self._lock:
                self._busy -= 1

    def _prepare(self, job: FrameJob, keep_image: bool | None) -> PreparedFrame | Failed:
        t0 = time.monotonic()
        timings = {"queue": (t0 - job.enqueued_at) * 1000}
        try:
            data = job.data if job.data is not None else decoding.read_file(job.path, self.settings.max_file_bytes)
            t1 = time.monotonic()
            target = self.model.input_hw if self.settings.jpeg_reduced_decode else None
            frame = decoding.decode_frame(data, self.settings.max_image_pixels, target)
            image = frame.image
            tensor, box = prepare_frame(image, (frame.width, frame.height), self.model.input_hw, self.model.input.dtype)
            t2 = time.monotonic()
        except FrameError as exc:
            timings["decode"] = (time.monotonic() - t0) * 1000
            vanished = exc.code == FrameError.READ_FAILED and job.data is None and self.guard.frame_vanished(job.path)
            return Failed(job, exc, timings, vanished=vanished)
        timings["read"] = (t1 - t0) * 1000
        timings["decode"] = (t2 - t1) * 1000
        keep = self.live.current().save_annotated if keep_image is None else keep_image
        return PreparedFrame(job, tensor, box, hashlib.sha256(data).hexdigest(), timings, image if keep else None)


class PrepareWorker(Worker):
    """One decode thread: takes jobs from the frames queue, puts prepared frames (or failures) on."""

    def __init__(
        self, index: int, preparer: FramePreparer, queues: StageQueues, supervisor: Supervisor | None = None
    ) -> None:
        super().__init__(f"decode-{index}", supervisor, daemon=True)
        self.preparer = preparer
        self.queues = queues

    def setup(self) -> bool:
        if not self.preparer.model.on_gpu:
            # On the CPU provider the model is the bottleneck and shares the cores with decoding; a decode thread
            # that preempts one of ONNX Runtime's intra-op threads stalls the whole operator (the others wait at
            # its barrier). A lower priority lets decoding fill the gaps instead of causing them.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICE_ON_CPU)
        return True

    def run(self) -> None:
        while not self.stopping:
            job = take(self.queues.frames)
            if job is not None:
                put_until_stopped(self.queues.prepared, self.preparer.prepare(job), lambda: self.stopping)
