"""The decode pool: frames queue -> read, decode, letterbox (vision/) -> prepared queue.

`FramePreparer` turns one job into a `PreparedFrame` (tensor, letterbox geometry, sha256, the decoded image when
annotation is wanted: then decoded at full size, whatever JPEG_REDUCED_DECODE says; for a frame whose camera
profile (ops/profiles.py) has an ROI or tiling, the views that vision/views.py cuts: the ROI crop, the tiles; for
the live page's ring of recent frames, UI_RECENT_FRAMES, the image as it was decoded) or a `Failed` envelope with
the frame's error; a file that cannot be read because its share went away is marked `vanished` (not the frame's
fault: it stays claimed). It serves the decode workers and the /predict callers alike, and counts the frames
inside it so that the batcher knows more are coming. Every view of a frame is made by the serving model's
transform, read once per frame (a swap falls between two frames, never inside one).

Per-frame errors stay per-frame by construction: each start of a share frame is counted first (quarantine.py: a
frame that keeps dying is set aside), the header is checked before a pixel is decoded (vision/decode.py), the
decode runs under its time and memory budget (vision/decode_guard.py), and any other surprise of a library on
these bytes fails this frame (`prepare_failed`), never the decode worker.
`PrepareWorker` is one decode thread (`decode-<i>`); DECODE_WORKERS of them run (one per usable CPU when 0), as many
at a time as pipeline/decode_pool.py allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time

from edge_inference.entities import FrameJob, FrameView, PreparedFrame
from edge_inference.errors import FrameError, UnavailableError
from edge_inference.names import shown
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.pipeline.decode_pool import DecodeSlots
from edge_inference.pipeline.envelopes import WAIT_S, Failed, StageQueues, put_until_stopped, take
from edge_inference.pipeline.quarantine import FrameAttempts
from edge_inference.settings import Settings
from edge_inference.share import share_fs
from edge_inference.share.guard import ShareGuard
from edge_inference.vision import decode as decoding
from edge_inference.vision import views as frame_views
from edge_inference.vision.decode_guard import DecodeGuard
from edge_inference.vision.preprocess import prepare_frame
from edge_inference.vision.serving import ModelSlot
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

DECODE_NICE_ON_CPU = 5  # decode threads' niceness once the model on the CPU is the slower stage (decode_pool.py)


class FramePreparer:
    """Bytes (from the share or a request) to a letterboxed tensor; never raises for a bad frame."""

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        live: LiveSettings,
        guard: ShareGuard,
        attempts: FrameAttempts,
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self.slot = slot  # frames are letterboxed for the model serving when they are decoded
        self.live = live
        self.guard = guard
        self.attempts = attempts
        self.stopping = stopping  # set when the pipeline stops: a share frame stops waiting for the decode budget
        self.decode_guard = DecodeGuard(
            settings.decode_timeout_seconds,
            settings.max_decode_bytes,
            max_overruns=max(2, settings.cpu_count),  # abandoned decodes burn a core each until they end
        )
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
        if job.data is None:  # a share frame: count this start before any work (a crash below counts too)
            quarantined = self.attempts.begin(job)
            if quarantined is not None:
                return Failed(job, quarantined, timings)
        s = self.settings
        live = self.live.current()
        judged = live.for_frame(job.rel_path) if job.data is None else live  # /predict: the global settings
        keep = judged.save_annotated if keep_image is None else keep_image
        try:
            data = job.data if job.data is not None else self._read_share_frame(job)
            t1 = time.monotonic()
            header = decoding.check_header(
                data, s.max_image_pixels, max_scans=s.jpeg_max_scans, max_decode_bytes=s.max_decode_bytes
            )
            transform = self.slot.active.transform  # a swap between two frames: each is made for its model
            profile = judged.profile
            geometry = profile is not None and (profile.roi is not None or profile.tiling is not None)
            # a frame to annotate is decoded whole: annotated/ gets the full resolution, never the reduced decode;
            # a crop or tiles need every pixel too
            reduce = s.jpeg_reduced_decode and not keep and not geometry
            scale = transform.scale(*header.display_size) if reduce else None
            frame = self.decode_guard.run(
                header.decode_bytes,
                lambda: decoding.decode_checked(data, header, scale),
                None if job.data is not None else lambda: not self.stopping.is_set(),  # /predict: 503, never a wait
            )
            image = frame.image
            if geometry:
                views = frame_views.cut(image, transform, profile)
            else:
                tensor, box = prepare_frame(image, (frame.width, frame.height), transform)
                views = (FrameView(tensor, box),)
            t2 = time.monotonic()
        except FrameError as exc:
            timings["decode"] = (time.monotonic() - t0) * 1000
            vanished = (
                exc.code == FrameError.READ_FAILED and job.data is None and self.guard.frame_vanished(job.rel_path)
            )
            return Failed(job, exc, timings, vanished=vanished)
        except OSError as exc:  # the share answered the read with an error: the frame waits, the share is checked
            timings["decode"] = (time.monotonic() - t0) * 1000
            error = FrameError(FrameError.READ_FAILED, f"{job.path.name}: cannot read: {exc.strerror}")
            return Failed(job, error, timings, vanished=True)
        except UnavailableError:
            raise  # /predict only: the decode budget is taken (503), not this frame's fault
        except Exception as exc:  # a library's surprise on these bytes: this frame fails, never the decode stage
            timings["decode"] = (time.monotonic() - t0) * 1000
            log.warning("%s: cannot prepare the frame", shown(job.rel_path), exc_info=exc)
            message = f"cannot prepare the frame: {type(exc).__name__}: {exc}"
            return Failed(job, FrameError(FrameError.PREPARE_FAILED, message[:500]), timings)
        timings["read"] = (t1 - t0) * 1000
        timings["decode"] = (t2 - t1) * 1000
        if keep_image is None and s.ui_recent_frames > 0:  # the live page's ring (ops/recent_frames.py) shows it,
            keep = True  # as decoded (a reduced decode too: the page scales the result to the picture)
        first, tiles = views[0], views[1:]
        if first.tile or tiles:
            timings["tiles"] = len(tiles) + first.tile
        return PreparedFrame(
            job,
            first.tensor,
            first.letterbox,
            hashlib.sha256(data).hexdigest(),
            timings,
            image if keep else None,
            origin=first.origin,
            frame_wh=(frame.width, frame.height) if geometry else None,
            tiles=tiles,
            first_is_tile=first.tile,
            transform=transform,
        )

    def _read_share_frame(self, job: FrameJob) -> bytes:
        """The bytes of a claimed frame, read through the folders the claim area checked (never a symlink)."""
        try:
            with self.guard.claims.readable(job.rel_path) as path:
                return decoding.read_file(path, self.settings.max_file_bytes)
        except FileNotFoundError:
            raise FrameError(FrameError.READ_FAILED, f"{job.path.name}: file disappeared before it was read") from None
        except share_fs.OutsideShare as exc:
            raise FrameError(FrameError.NOT_A_FILE, f"{shown(job.rel_path)}: {exc.strerror}") from None


class PrepareWorker(Worker):
    """One decode thread: takes jobs from the frames queue, puts prepared frames (or failures) on."""

    def __init__(
        self,
        index: int,
        preparer: FramePreparer,
        queues: StageQueues,
        slots: DecodeSlots,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__(f"decode-{index}", supervisor, daemon=True)
        self.preparer = preparer
        self.queues = queues
        self.slots = slots
        self._yielding = False

    def _yield_to_model(self) -> None:
        """Decode at a lower priority from now on (pipeline/decode_pool.py says when: the model on the CPU is the
        slower stage, and a decode thread preempting one of its intra-op threads stalls the whole operator)."""
        self._yielding = True
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICE_ON_CPU)

    def run(self) -> None:
        while not self.stopping:
            if not self.slots.acquire(WAIT_S):
                continue
            try:
                job = take(self.queues.frames)
                item = None if job is None else self.preparer.prepare(job)
            finally:
                self.slots.release()
            if item is None:
                continue
            if isinstance(item, PreparedFrame):
                self.slots.observe(item.timings_ms["decode"])
                if self.slots.yield_to_model and not self._yielding:
                    self._yield_to_model()
            put_until_stopped(self.queues.prepared, item, lambda: self.stopping)
