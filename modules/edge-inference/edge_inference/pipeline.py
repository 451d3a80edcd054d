"""The frame pipeline: intake -> decode pool -> batcher/inference -> dispatcher.

    watcher --offer--> intake (claim, ledger) --FrameJob--> frames queue (QUEUE_SIZE)
      --> decode/preprocess threads --PreparedFrame--> prepared queue (2 x batch)
      --> inference thread (batches up to BATCH_SIZE or BATCH_MAX_WAIT_MS) --> done queue (4 x batch)
      --> dispatcher thread: postprocess (live twin values) -> result file (atomic; marks the frame done)
          -> ledger -> telemetry -> metrics -> input disposition

Overflow policies, each where the queue is: the frames queue is never put into when full - intake answers
DEFER and the frame waits on the share; the prepared and done queues block their producer (back-pressure
up the chain), with the stop event checked between short waits. /predict requests enter at the prepared
queue, so they share the batcher and the one model session with share frames.

Per-frame errors stay per-frame by construction: any exception while preparing, inferring, postprocessing or
writing one frame fails that frame with a code and a reason (an error result, the file to failed/), never the
stage; a failed batch is run again frame by frame so that only the frame at fault fails. Each start of a share
frame is counted in the ledger first, and a frame that keeps dying is quarantined (quarantine.py). What still
escapes a stage (the ledger's database failing, the model failing batch after batch) stops it: `fatal` is set,
and the app stops the module with a non-zero exit so IoT Edge restarts it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_inference import decode as decoding
from edge_inference import output_layout, postprocess, share_fs, tempfiles
from edge_inference.arrivals import ArrivingFrames
from edge_inference.claims import ClaimArea, ClaimRefusals, safe_join
from edge_inference.decode_guard import DecodeGuard
from edge_inference.entities import FrameJob, FrameResult, ModelInfo, PreparedFrame, utc_now_iso
from edge_inference.errors import FrameError, GpuError, ShareError, UnavailableError
from edge_inference.ledger import Ledger, LedgerEntry
from edge_inference.live_settings import LiveSettings, TwinSettings
from edge_inference.metrics import MetricsRegistry
from edge_inference.model import OnnxModel
from edge_inference.mounts import is_mount_point, mount_point_of, settle_window
from edge_inference.names import shown
from edge_inference.preprocess import prepare_frame
from edge_inference.quarantine import FrameAttempts
from edge_inference.results import OutputFullError, ResultWriter
from edge_inference.settings import Settings
from edge_inference.watcher import Offer, is_frame_name

log = logging.getLogger(__name__)

_WAIT = 0.1  # seconds: the longest any worker waits before checking its stop event
_FATAL_BATCH_FAILURES = 3  # consecutive failed inference batches before the stage is declared dead
_DECODE_NICE_ON_CPU = 5  # decode threads' niceness when inference runs on the CPU (see _decode_loop)
_PAUSE_REASONS = frozenset({"paused", "twinPaused"})  # an operator's pause: direct method or the twin's `paused`
_PRUNE_INTERVAL = 3600.0  # seconds between ledger retention passes
_DISPATCH_GROUP = 32  # results made durable together (one file-system flush, one ledger/outbox transaction)


class ResultListener(Protocol):
    """Telemetry: told about every finished share frame (the dispatcher thread calls it)."""

    def on_result(self, result: FrameResult) -> None: ...


@dataclass
class _Failed:
    """A frame that failed before inference; travels down the same queues to the dispatcher.

    `vanished`: the file could not be read because the share went away (not the frame's fault): no result
    is written, the frame stays claimed and is retried when the share is back."""

    job: FrameJob
    error: FrameError
    timings_ms: dict[str, float] = field(default_factory=dict)
    vanished: bool = False


@dataclass
class _Request:
    """An in-memory frame from /predict: the dispatcher completes its future instead of writing files."""

    future: Future[FrameResult]
    confidence: float | None


@dataclass
class _Finished:
    """A postprocessed share frame waiting for its durable write."""

    job: FrameJob
    item: PreparedFrame | _Failed
    result: FrameResult
    live: TwinSettings


@dataclass
class _Done:
    item: PreparedFrame | _Failed
    output: np.ndarray | None = None


class Pipeline:
    """The running pipeline; also the `ModuleControl` and `Predictor` the front ends talk to."""

    def __init__(
        self,
        settings: Settings,
        model: OnnxModel,
        live: LiveSettings,
        ledger: Ledger,
        claims: ClaimArea,
        writer: ResultWriter,
        metrics: MetricsRegistry,
        telemetry: ResultListener | None = None,
        on_frame_outcome: Callable[[bool], None] | None = None,
        telemetry_group: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.live = live
        self.ledger = ledger
        self.attempts = FrameAttempts(ledger, settings.max_frame_attempts)
        self.claims = claims
        self.writer = writer
        self.metrics = metrics
        self.telemetry = telemetry
        self.on_frame_outcome = on_frame_outcome
        self.telemetry_group = telemetry_group or contextlib.nullcontext
        # A share that is unmounted under the module leaves its mount point as a plain folder: results written
        # there would be hidden when the share returns. Remember the mount holding each share folder at start
        # (`/` needs no watching), and never use a share folder whose mount is gone.
        self._output_mount = _share_mount(settings.output_dir)
        self._input_mount = _share_mount(settings.input_dir)
        settle, trust_mtime = settle_window(settings.input_dir, settings.settle_seconds)
        self.arrivals = ArrivingFrames(
            settings.truncated_grace_seconds, settle, trust_mtime, lambda rel: share_fs.lstat(*claims.location(rel))
        )
        self.refusals = ClaimRefusals()
        self.decode_guard = DecodeGuard(
            settings.decode_timeout_seconds,
            settings.max_decode_bytes,
            max_overruns=max(2, settings.cpu_count),  # abandoned decodes burn a core each until they end
        )
        self.max_batch = model.serving_batch  # the batch sizes the model warmed up
        self.frames: queue.Queue[FrameJob] = queue.Queue(maxsize=settings.queue_size)
        self.prepared: queue.Queue[PreparedFrame | _Failed] = queue.Queue(maxsize=2 * self.max_batch + 2)
        self.done: queue.Queue[_Done] = queue.Queue(maxsize=4 * self.max_batch + 4)
        self._requests: dict[int, _Request] = {}
        self._lock = threading.Lock()
        self._in_flight: dict[str, str] = {}  # rel_path -> frame_id
        self._generations = ledger.generations()  # frame_id -> times processed again on request
        self._blocked: dict[str, str] = {}  # reason -> message; intake pauses while non-empty
        self._stop = threading.Event()
        self._stop_intake = threading.Event()
        self._claims_dirty = threading.Event()
        self._threads: list[threading.Thread] = []
        self._preparing = 0  # frames inside _prepare right now (decode workers and /predict callers)
        self._batch_buffer: np.ndarray | None = None  # the inference thread's reused batch input
        self.fatal: BaseException | None = None
        self.fatal_event = threading.Event()
        self.watcher_alive: Callable[[], bool] = lambda: True
        self.note_path: Callable[[str], bool] | None = None  # the watcher's note(), set by the app
        self.on_intake_change: Callable[[str, bool, str], None] | None = None  # (reason, blocked, message)
        self.counters = {"ok": 0, "failed": 0, "detections": 0, "http": 0}
        self.started_at = time.time()
        self.last_result_at: str | None = None
        self.ready = False
        self._class_ids = {name: i for i, name in enumerate(model.class_names)}

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        # The decode pool is the parallelism: OpenCV's own thread pool inside each call would oversubscribe.
        cv2.setNumThreads(1)
        try:
            self.claims.prepare()
        except OSError as exc:  # e.g. `.edge-inference` is a plain file on the share: one sentence, no traceback
            raise ShareError(
                f"cannot make the claim area {shown(str(self.claims.own))} on the input share ({exc.strerror}):"
                " is `.edge-inference` on the share a plain file, or the share read-only? remove or rename it, or"
                " set INPUT_DISPOSITION=keep for a read-only share"
            ) from None
        workers = self.settings.effective_decode_workers(self.model.on_gpu)
        specs: list[tuple[str, Callable[[], None]]] = [(f"decode-{i}", self._decode_loop) for i in range(workers)]
        specs += [("inference", self._inference_loop), ("dispatch", self._dispatch_loop)]
        specs += [("housekeeping", self._housekeeping_loop)]
        for name, target in specs:
            thread = threading.Thread(target=self._guard, args=(name, target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.reconcile_claims()
        self.ready = True
        log.info("pipeline started: %d decode workers, batch up to %d", workers, self.max_batch)

    def _guard(self, name: str, loop: Callable[[], None]) -> None:
        try:
            loop()
        except GpuError as exc:  # not a bug: one line, no traceback; the module exits and restarts
            log.error("pipeline stage %s stopped: %s", name, exc)
            self.fatal = exc
            self.fatal_event.set()
        except BaseException as exc:
            log.exception("pipeline stage %s died", name)
            self.fatal = exc
            self.fatal_event.set()

    def stop(self, deadline: float) -> bool:
        """Drain within `deadline` (time.monotonic()): finish what was taken, take nothing new.

        Returns True when everything in flight finished; frames still claimed are recovered at restart."""
        self._stop_intake.set()
        drained = False
        while time.monotonic() < deadline and not self.fatal_event.is_set():
            with self._lock:
                busy = bool(self._in_flight) or bool(self._requests)
            if not busy and self.frames.empty() and self.prepared.empty() and self.done.empty():
                drained = True
                break
            time.sleep(0.02)
        self.ready = False
        self._stop.set()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        with self._lock:
            requests = list(self._requests.values())
            self._requests.clear()
        for request in requests:
            if not request.future.done():
                request.future.set_exception(UnavailableError("the module is shutting down", 5.0))
        if not drained:
            log.warning(
                "shutdown deadline reached with %d frames in flight; they resume at restart", len(self._in_flight)
            )
        return drained

    # -- intake ---------------------------------------------------------------------------------------------
    def set_intake_blocked(self, reason: str, active: bool, message: str = "") -> None:
        with self._lock:
            was = reason in self._blocked
            if active:
                self._blocked[reason] = message or reason
            else:
                self._blocked.pop(reason, None)
        if was != active:
            self.metrics.paused.labels(reason=reason).set(1 if active else 0)
            log.warning("intake %s: %s", "paused" if active else "resumed", message or reason)
            if not active:
                self._claims_dirty.set()
            if self.on_intake_change is not None:
                try:
                    self.on_intake_change(reason, active, message or reason)
                except Exception:
                    log.exception("intake change callback failed for %s", reason)

    @property
    def intake_blocked(self) -> dict[str, str]:
        with self._lock:
            return dict(self._blocked)

    def offer(self, rel_path: str, st: os.stat_result, source: str) -> Offer:
        """The watcher's callback for a complete frame on the share."""
        if self._stop_intake.is_set() or self._blocked:
            return Offer.DEFER
        if not stat.S_ISREG(st.st_mode):
            self._refuse_special(rel_path, st)
            return Offer.DROP
        job = FrameJob(rel_path, Path(), st.st_size, st.st_mtime_ns, _source(source), time.monotonic())
        frame_id = job.frame_id
        with self._lock:
            if rel_path in self._in_flight or self.arrivals.waiting(rel_path):
                return Offer.DROP
            if not self.claims.moves_files and self.ledger.is_finished(frame_id):
                return Offer.DROP
            if self.frames.full():
                return Offer.DEFER
            try:
                path = self.claims.claim(rel_path)
            except OSError as exc:  # one frame's claim failing never stops the others: this one waits alone
                if share_fs.is_transient(exc):
                    self._claims_dirty.set()  # the housekeeping looks at the share at its next round
                return Offer(self.refusals.verdict(rel_path, exc))
            self.refusals.taken(rel_path)
            if path is None:
                return Offer.DROP  # gone: another replica took it, or the writer removed it
            self.ledger.record(frame_id, rel_path, st.st_size, st.st_mtime_ns, "claimed")
            self._in_flight[rel_path] = frame_id
            self.frames.put_nowait(FrameJob(rel_path, path, st.st_size, st.st_mtime_ns, job.source, job.enqueued_at))
        self._update_depths()
        return Offer.TAKEN

    def _refuse_special(self, rel_path: str, st: os.stat_result) -> None:
        """A FIFO, device node, socket or symlink on the share: never opened or followed, reported once."""
        job = FrameJob(rel_path, Path(), st.st_size, st.st_mtime_ns, "scan", time.monotonic())
        if self.ledger.is_finished(job.frame_id):
            return
        kind = stat.filemode(st.st_mode)
        error = FrameError(FrameError.NOT_A_FILE, f"{rel_path}: not a regular file ({kind}); left in place, not read")
        log.warning("%s", error.message)
        result = self._result(job, None, error=error)
        try:
            self.writer.write_result(result)
            self.writer.write_error(rel_path, error.as_dict())
        except OSError as exc:
            log.error("cannot record the refusal of %s: %s", rel_path, exc)
            return
        self.ledger.record(job.frame_id, rel_path, st.st_size, st.st_mtime_ns, "failed")
        self._count(result)

    def reconcile_claims(self) -> int:
        """Finish or re-queue frames left in our claim area (a crash, a full share, a silent replica)."""
        self._claims_dirty.clear()
        if self._stop_intake.is_set():
            return 0
        try:
            self.claims.adopt_stale()
            claimed = list(self.claims.claimed())
        except OSError as exc:  # the input share is away: try again later, forget nothing
            log.warning("cannot read the claim area: %s (retried)", exc)
            self._claims_dirty.set()
            if not self._input_available():  # housekeeping resumes intake, and reconciles, once it is back
                self.set_intake_blocked("inputUnavailable", True, f"input share unavailable ({exc.strerror})")
            return 0
        queued = 0
        for rel_path, path, st in claimed:
            job = FrameJob(rel_path, path, st.st_size, st.st_mtime_ns, "recovered", time.monotonic())
            with self._lock:
                if rel_path in self._in_flight or self.arrivals.waiting(rel_path):
                    continue
                state = self.ledger.state(job.frame_id)
                if state in ("done", "failed"):
                    finish = True
                elif self._blocked or self.frames.full():
                    self._claims_dirty.set()
                    continue
                else:
                    finish = False
                    self._in_flight[rel_path] = job.frame_id
                    self.frames.put_nowait(job)
                    queued += 1
            if finish:
                self._dispose(rel_path, state == "done")
        if queued:
            log.info("resumed %d claimed frames left unfinished", queued)
        return queued

    # -- stages ---------------------------------------------------------------------------------------------
    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def _decode_loop(self) -> None:
        if not self.model.on_gpu:
            # On the CPU provider the model is the bottleneck and shares the cores with decoding; a decode thread
            # that preempts one of ONNX Runtime's intra-op threads stalls the whole operator (the others wait at
            # its barrier). A lower priority lets decoding fill the gaps instead of causing them.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _DECODE_NICE_ON_CPU)
        while not self._stop.is_set():
            try:
                job = self.frames.get(timeout=_WAIT)
            except queue.Empty:
                continue
            self._put(self.prepared, self._prepare(job))

    def _prepare(self, job: FrameJob, keep_image: bool | None = None) -> PreparedFrame | _Failed:
        with self._lock:
            self._preparing += 1
        try:
            return self._prepare_frame(job, keep_image)
        finally:
            with self._lock:
                self._preparing -= 1

    def _more_coming(self) -> bool:
        """Frames are being decoded or wait to be: worth holding a batch open for them."""
        return self._preparing > 0 or not self.frames.empty()

    def _prepare_frame(self, job: FrameJob, keep_image: bool | None) -> PreparedFrame | _Failed:
        t0 = time.monotonic()
        timings = {"queue": (t0 - job.enqueued_at) * 1000}
        if job.data is None:  # a share frame: count this start before any work (a crash below counts too)
            quarantined = self.attempts.begin(job)
            if quarantined is not None:
                return _Failed(job, quarantined, timings)
        try:
            data = job.data if job.data is not None else self._read_share_frame(job)
            t1 = time.monotonic()
            target = self.model.input_hw if self.settings.jpeg_reduced_decode else None
            s = self.settings
            header = decoding.check_header(
                data, s.max_image_pixels, max_scans=s.jpeg_max_scans, max_decode_bytes=s.max_decode_bytes
            )
            frame = self.decode_guard.run(
                header.decode_bytes,
                lambda: decoding.decode_checked(data, header, target),
                None if job.data is not None else lambda: not self._stop.is_set(),  # /predict: 503, never a wait
            )
            image = frame.image
            tensor, box = prepare_frame(image, (frame.width, frame.height), self.model.input_hw, self.model.input.dtype)
            t2 = time.monotonic()
        except FrameError as exc:
            timings["decode"] = (time.monotonic() - t0) * 1000
            if exc.code == FrameError.READ_FAILED and job.data is None and self._share_problem(job):
                return _Failed(job, exc, timings, vanished=True)
            return _Failed(job, exc, timings)
        except OSError as exc:  # the share answered the read with an error: the frame waits, the share is checked
            timings["decode"] = (time.monotonic() - t0) * 1000
            error = FrameError(FrameError.READ_FAILED, f"{job.path.name}: cannot read: {exc.strerror}")
            return _Failed(job, error, timings, vanished=True)
        except UnavailableError:
            raise  # /predict only: the decode budget is taken (503), not this frame's fault
        except Exception as exc:  # a library's surprise on these bytes: this frame fails, never the decode stage
            timings["decode"] = (time.monotonic() - t0) * 1000
            log.warning("%s: cannot prepare the frame", shown(job.rel_path), exc_info=exc)
            message = f"cannot prepare the frame: {type(exc).__name__}: {exc}"
            return _Failed(job, FrameError(FrameError.PREPARE_FAILED, message[:500]), timings)
        timings["read"] = (t1 - t0) * 1000
        timings["decode"] = (t2 - t1) * 1000
        keep = self.live.current().save_annotated if keep_image is None else keep_image
        return PreparedFrame(job, tensor, box, hashlib.sha256(data).hexdigest(), timings, image if keep else None)

    def _read_share_frame(self, job: FrameJob) -> bytes:
        """The bytes of a claimed frame, read through the folders the claim area checked (never a symlink)."""
        try:
            with self.claims.readable(job.rel_path) as path:
                return decoding.read_file(path, self.settings.max_file_bytes)
        except FileNotFoundError:
            raise FrameError(FrameError.READ_FAILED, f"{job.path.name}: file disappeared before it was read") from None
        except share_fs.OutsideShare as exc:
            raise FrameError(FrameError.NOT_A_FILE, f"{shown(job.rel_path)}: {exc.strerror}") from None

    def _inference_loop(self) -> None:
        consecutive_failures = 0
        max_wait = self.settings.batch_max_wait_ms / 1000
        while not self._stop.is_set():
            try:
                first = self.prepared.get(timeout=_WAIT)
            except queue.Empty:
                continue
            batch: list[PreparedFrame] = []
            pending: list[PreparedFrame | _Failed] = [first]
            deadline = time.monotonic() + max_wait
            while True:
                item = pending.pop()
                if isinstance(item, _Failed):
                    self._put(self.done, _Done(item))
                else:
                    batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                remaining = deadline - time.monotonic()
                if remaining > 0 and self.prepared.empty() and not self._more_coming():
                    break  # nothing else in the pipe: run now rather than wait for a batch that will not fill
                try:
                    pending.append(
                        self.prepared.get(timeout=remaining) if remaining > 0 else self.prepared.get_nowait()
                    )
                except queue.Empty:
                    break
            if not batch:
                continue
            t0 = time.monotonic()
            outputs = self._infer(batch)
            elapsed = (time.monotonic() - t0) * 1000
            self.metrics.batch_size.observe(len(batch))
            failures = [out for out in outputs if isinstance(out, Exception)]
            consecutive_failures = consecutive_failures + 1 if len(failures) == len(batch) else 0
            for p, out in zip(batch, outputs, strict=True):
                if isinstance(out, Exception):
                    error = FrameError(FrameError.INFERENCE_FAILED, f"inference failed: {out}"[:500])
                    self._put(self.done, _Done(_Failed(p.job, error, p.timings_ms)))
                else:
                    p.timings_ms["inference"] = elapsed
                    self._put(self.done, _Done(p, out))
            if consecutive_failures >= _FATAL_BATCH_FAILURES:  # the model itself fails (a lost GPU), not a frame
                raise RuntimeError(f"{consecutive_failures} inference batches failed in a row: {failures[-1]}")

    def _infer(self, batch: list[PreparedFrame]) -> list[np.ndarray | Exception]:
        """Each frame's output, or the exception that stands for it. A failed batch is run again frame by frame,
        so that one frame the model cannot take fails alone."""
        try:
            first_output = self.model.run(self._stack([p.tensor for p in batch]))[0]
            if self.model.layout == "rows":
                return [first_output]
            return [first_output[i] for i in range(len(batch))]
        except GpuError:
            raise  # the GPU failed, not these frames: they stay claimed and run again after the restart
        except Exception as exc:
            if len(batch) == 1:
                log.error("inference failed for %s: %s", shown(batch[0].job.rel_path), exc)
                return [exc]
            log.warning("inference failed for a batch of %d (%s): running its frames one by one", len(batch), exc)
            return [self._infer([p])[0] for p in batch]

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

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.done.get(timeout=_WAIT)
            except queue.Empty:
                continue
            group = [first]  # whatever else is already done joins this group: one durable write for all
            while len(group) < _DISPATCH_GROUP:
                try:
                    group.append(self.done.get_nowait())
                except queue.Empty:
                    break
            finished = [f for f in (self._dispatch(done) for done in group) if f is not None]
            if finished:
                self._finish_share_frames(finished)
            self._update_depths()

    def _dispatch(self, done: _Done) -> _Finished | None:
        """Postprocess one frame; /predict requests are answered here, share frames returned for writing."""
        item = done.item
        job = item.job
        if isinstance(item, _Failed) and item.vanished:
            self.attempts.retry_later(job, item.error.message, share_away=True)
            self._input_unavailable(job, item.error)
            return None
        if isinstance(item, _Failed) and job.source != "http" and self.arrivals.hold(job, item.error):
            self.attempts.retry_later(job, item.error.message, share_away=True)  # its writer's doing, not its own
            with self._lock:  # it waits for its writer where it is, with no result: `arrivals` hands it back
                self._in_flight.pop(job.rel_path, None)
            return None
        live = self.live.current()
        request = self._requests.pop(id(job), None) if job.source == "http" else None
        try:
            result = self._postprocess(item, done.output, live, request)
        except Exception as exc:  # this frame's output cannot be read: it fails alone
            log.error("%s: postprocessing failed", shown(job.rel_path), exc_info=exc)
            error = FrameError(FrameError.POSTPROCESS_FAILED, f"postprocessing failed: {type(exc).__name__}: {exc}")
            result = self._result(job, None, error=error, timings=item.timings_ms, live=live)
        if request is not None:
            self.counters["http"] += 1
            self._observe(result)
            request.future.set_result(result)
            return None
        return _Finished(job, item, result, live)

    def _postprocess(
        self, item: PreparedFrame | _Failed, output: np.ndarray | None, live: TwinSettings, request: _Request | None
    ) -> FrameResult:
        job = item.job
        t0 = time.monotonic()
        if isinstance(item, _Failed):
            result = self._result(job, None, error=item.error, timings=item.timings_ms, live=live)
        else:
            confidence = request.confidence if request and request.confidence is not None else live.confidence_threshold
            options = postprocess.DecodeOptions(
                confidence=confidence,
                iou=live.iou_threshold,
                max_detections=live.max_detections,
                agnostic=self.settings.agnostic_nms,
                keep_class_ids=self._keep_ids(live),
            )
            if output is None:
                raise ValueError("no model output for this frame")
            detections = postprocess.decode(self.model.layout, output, item.letterbox, options, self.model.class_names)
            item.timings_ms["postprocess"] = (time.monotonic() - t0) * 1000
            result = self._result(job, item, detections=tuple(detections), timings=item.timings_ms, live=live)
            if request is not None and request.confidence is not None:
                result = _with_confidence(result, request.confidence)
        return result

    def _finish_share_frames(self, group: list[_Finished]) -> None:
        """Write a group of results with one durable flush, then ledger, telemetry (one outbox transaction),
        metrics and the originals' disposition. Under light load a group is one frame."""
        t0 = time.monotonic()
        try:
            self._write_outputs(group)
        except (OutputFullError, OSError) as exc:
            # a passing network error (EIO, ESTALE...) or a share that does not answer is the share's, not the frame's;
            # else the failure is a frame's own: find it, and it counts
            share_away = share_fs.is_transient(exc) or not self._output_writable()
            if not share_away and len(group) > 1:
                for f in group:
                    self._finish_share_frames([f])
                return
            error = group[0].result.error
            if share_away or error is None or error.get("code") != FrameError.QUARANTINED:
                for f in group:
                    self.attempts.retry_later(f.job, f"cannot write its outputs: {exc}", share_away=share_away)
                    self._output_failed(f.job, exc)
                return
            group = [self._unwritable(group[0], exc)]  # quarantined and still unwritable: the ledger alone says so
        except Exception as exc:  # not a share error: find the frame at fault, and fail it alone
            if len(group) > 1:
                for f in group:
                    self._finish_share_frames([f])
                return
            group = [self._unwritable(group[0], exc)]
        write_s = (time.monotonic() - t0) / len(group)
        t1 = time.monotonic()
        # Telemetry is stored before the ledger marks the frames done: a kill in between re-processes them
        # (same message ids, which the outbox and upstream de-duplicate) instead of losing their messages.
        if self.telemetry is not None:
            with self.telemetry_group():
                for f in group:
                    try:
                        self.telemetry.on_result(f.result)
                    except Exception:  # one failing sink never stops the others
                        log.exception("telemetry failed for %s", f.job.rel_path)
        send_s = (time.monotonic() - t1) / len(group)
        self.ledger.record_many(
            [
                (f.job.frame_id, f.job.rel_path, f.job.size, f.job.mtime_ns, "done" if f.result.ok else "failed")
                for f in group
            ]
        )
        for f in group:
            self._dispose(f.job.rel_path, f.result.ok, mount_checked=True)  # checked for the group
            with self._lock:
                self._in_flight.pop(f.job.rel_path, None)
            self.metrics.stage_seconds.labels(stage="write").observe(write_s)
            self.metrics.stage_seconds.labels(stage="send").observe(send_s)
            self._observe(f.result)
            self._count(f.result)
            if self.on_frame_outcome is not None:
                self.on_frame_outcome(f.result.ok)
        log.debug("wrote %d results in %.1f ms", len(group), (time.monotonic() - t0) * 1000)

    def _write_outputs(self, group: list[_Finished]) -> None:
        self._check_output_mounted()
        for f in group:
            if isinstance(f.item, PreparedFrame) and f.item.image is not None and f.live.save_annotated:
                self.writer.write_annotated(f.job.rel_path, f.item.image, f.result.detections, f.item.letterbox.width)
            if f.result.error is not None:
                self.writer.write_error(f.job.rel_path, f.result.error, {"frameId": f.job.frame_id})
        self.writer.write_results([f.result for f in group])  # the mark of finished frames

    def _unwritable(self, f: _Finished, exc: Exception) -> _Finished:
        """A frame whose outputs raised something other than a share error: it fails with `write_failed`, its
        error result written instead; if even that cannot be written, the ledger alone marks it failed."""
        error = FrameError(FrameError.WRITE_FAILED, f"cannot write the outputs: {type(exc).__name__}: {exc}"[:500])
        log.error("%s: %s", shown(f.job.rel_path), error.message, exc_info=exc)
        failed = _Finished(f.job, _Failed(f.job, error), self._result(f.job, None, error=error, live=f.live), f.live)
        try:
            self._write_outputs([failed])
        except Exception as again:
            log.error("%s: not even its error result can be written (%s)", shown(f.job.rel_path), again)
        return failed

    def _share_problem(self, job: FrameJob) -> bool:
        """A claimed file that cannot be read: did the share go away (rather than the frame being bad)?"""
        try:
            share_fs.lstat(*self.claims.location(job.rel_path))
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            return True  # the share answers with an error (EIO, ESTALE...): not the frame's fault
        else:
            return False
        if self.claims.moves_files:
            return True  # the claim area is ours alone: a missing file there means the share is away
        return not _readable_dir(self.settings.input_dir)

    def _input_unavailable(self, job: FrameJob, error: FrameError) -> None:
        """Keep the frame (claimed, no result), pause intake until the input share answers again."""
        with self._lock:
            self._in_flight.pop(job.rel_path, None)
        if self.claims.moves_files or not _readable_dir(self.settings.input_dir):
            log.warning("%s: %s; the input share looks unavailable: kept for later", job.rel_path, error.message)
            self.set_intake_blocked("inputUnavailable", True, f"input share unavailable ({error.message})")
        self._claims_dirty.set()

    def _output_failed(self, job: FrameJob, exc: BaseException) -> None:
        """The result could not be written: keep the frame claimed, pause intake, retry when space returns."""
        full = isinstance(exc, OutputFullError)
        log.error("cannot write the result of %s: %s", job.rel_path, exc)
        with self._lock:
            self._in_flight.pop(job.rel_path, None)
        if not self.claims.moves_files:
            self.ledger.record(job.frame_id, job.rel_path, job.size, job.mtime_ns, "claimed")
        self.set_intake_blocked("outputFull" if full else "outputError", True, f"output share: {exc}")
        self._claims_dirty.set()

    def _dispose(self, rel_path: str, ok: bool, *, mount_checked: bool = False) -> None:
        try:
            if not mount_checked and (not ok or self.settings.input_disposition == "archive"):  # writes to output
                self._check_output_mounted()
            self.claims.dispose(rel_path, ok)
        except OSError as exc:
            log.error("cannot %s %s: %s (retried later)", self.settings.input_disposition, shown(rel_path), exc)
            self._claims_dirty.set()
            if not self._output_writable():  # retried when the output share answers, not every second till then
                self.set_intake_blocked("outputError", True, f"output share: {exc}")
        except Exception as exc:  # this frame's path, not the share: logged, never the dispatcher's death
            log.error("cannot %s %s: %s", self.settings.input_disposition, shown(rel_path), exc, exc_info=exc)

    def _housekeeping_loop(self) -> None:
        state = {"beat": 0.0, "adopt": 0.0, "prune": time.monotonic() + 60.0}  # no pruning in a start-up rush
        while not self._stop.wait(1.0):
            try:
                self._housekeeping_tick(state)
            except OSError as exc:  # a share error never kills the housekeeping: the next round tries again
                log.warning("housekeeping: %s (retried)", exc)
                self._claims_dirty.set()

    def _housekeeping_tick(self, state: dict[str, float]) -> None:
        now = time.monotonic()
        if self.settings.ledger_retention_days > 0 and now >= state["prune"]:
            _forgotten, more = self.prune_ledger()
            state["prune"] = now + (1.0 if more else _PRUNE_INTERVAL)  # a backlog goes in small steps
        if now - state["beat"] > 10:
            self.claims.heartbeat()
            state["beat"] = now
        self._watch_shares()
        if now - state["adopt"] > max(5.0, self.settings.claim_stale_seconds / 4):
            state["adopt"] = now
            if self.claims.adopt_stale():
                self._claims_dirty.set()
        if self._claims_dirty.is_set() and not self._blocked:
            self.reconcile_claims()
        if not self._blocked and not self._stop_intake.is_set():
            self.arrivals.release_due(self._take_again)
        tempfiles.sweep_orphans()  # temp files a failed write could not remove while a share was away
        tick = getattr(self.telemetry, "tick", None)
        if callable(tick):
            try:
                tick()
            except Exception:
                log.exception("telemetry tick failed")

    def _take_again(self, job: FrameJob) -> bool:
        """Queue a frame that waited for its writer (`arrivals`); False when the queue is full (it waits on)."""
        with self._lock:
            if job.rel_path in self._in_flight or self.frames.full():
                return False
            self._in_flight[job.rel_path] = job.frame_id
            self.frames.put_nowait(job)
        return True

    def prune_ledger(self, now: float | None = None, limit: int = 500) -> tuple[int, bool]:
        """Forget finished frames older than LEDGER_RETENTION_DAYS (at most `limit` per call), except frames the
        ledger must still remember: claimed ones (archive/delete), and ones still on a `keep` share. Returns how
        many were forgotten and whether more are due."""
        keep: Callable[[LedgerEntry], bool]
        if self.claims.moves_files:
            try:
                claimed = {rel for rel, _path, _st in self.claims.claimed()}
            except OSError:
                return 0, False  # the share is away: try at the next round
            with self._lock:
                claimed.update(self._in_flight)
            keep = lambda e: e.rel_path in claimed  # noqa: E731
        else:
            if not self._input_available():
                return 0, False  # a missing file on a missing share says nothing
            keep = self._still_on_share
        forgotten, more = self.ledger.prune(self.settings.ledger_retention_days * 86400, keep, limit, now)
        for frame_id in forgotten:
            self._generations.pop(frame_id, None)
        if forgotten:
            log.info(
                "ledger: forgot %d finished frames older than %g days",
                len(forgotten),
                self.settings.ledger_retention_days,
            )
        return len(forgotten), more

    def _still_on_share(self, entry: LedgerEntry) -> bool:
        """Keep mode: the ledger alone keeps the frame from being processed again while its file is there."""
        try:
            st = share_fs.lstat(self.settings.input_dir, entry.rel_path)
        except FileNotFoundError:
            return not _readable_dir(self.settings.input_dir)  # gone, unless the whole share went away meanwhile
        except (OSError, ValueError):
            return True
        return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns

    def _watch_shares(self) -> None:
        """Pause intake while a share does not answer, even with no frame in flight to notice it (the operator
        gets the alarm at once), and resume when it is back. Low free space is the disk monitor's alarm."""
        try:
            self._check_output_mounted()
        except OSError as exc:
            self.set_intake_blocked("outputError", True, f"output share: {exc.strerror}")
        else:
            held = [reason for reason in ("outputFull", "outputError") if reason in self._blocked]
            if held and self._output_writable():
                for reason in held:
                    self.set_intake_blocked(reason, False)
        if self._input_available():
            self.set_intake_blocked("inputUnavailable", False)
        elif "inputUnavailable" not in self._blocked:
            self.set_intake_blocked(
                "inputUnavailable", True, "input share unavailable (INPUT_DIR or the claim area cannot be read)"
            )

    def _input_available(self) -> bool:
        if not _readable_dir(self.settings.input_dir) or _mount_gone(self._input_mount):
            return False
        if not self.claims.moves_files or _readable_dir(self.claims.own):
            return True
        try:  # the share answers, but our claim area is gone (someone removed `.edge-inference`): make it again
            self.claims.prepare()
        except OSError:
            return False
        log.warning("the claim area %s was missing on the input share: made again", self.claims.own)
        return True

    def _check_output_mounted(self) -> None:
        if _mount_gone(self._output_mount):
            raise OSError(errno.ENODEV, "the output share is no longer mounted (its mount point is a plain folder)")

    def _output_writable(self) -> bool:
        try:
            self._check_output_mounted()
            self.settings.output_dir.mkdir(parents=True, exist_ok=True)  # as at start (a share that came back empty)
            usage = shutil.disk_usage(self.settings.output_dir)
        except OSError:
            return False
        return usage.free >= max(self.settings.min_free_mb * 1024 * 1024, 64 * 1024)

    # -- results --------------------------------------------------------------------------------------------
    def _keep_ids(self, live: TwinSettings) -> frozenset[int] | None:
        if not live.classes:
            return None
        return frozenset(self._class_ids[name] for name in live.classes if name in self._class_ids)

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.model.name, self.model.version, self.model.provider, self.model.sha256)

    def _result(
        self,
        job: FrameJob,
        prepared: PreparedFrame | None,
        *,
        detections: tuple[Any, ...] = (),
        error: FrameError | None = None,
        timings: dict[str, float] | None = None,
        live: TwinSettings | None = None,
    ) -> FrameResult:
        live = live or self.live.current()
        timings = dict(timings or {})
        timings["total"] = (time.monotonic() - job.enqueued_at) * 1000
        generation = self._generations.get(job.frame_id) if self._generations else None
        return FrameResult(
            rel_path=job.rel_path,
            frame_id=f"{job.frame_id}.r{generation}" if generation else job.frame_id,
            width=prepared.letterbox.width if prepared else None,
            height=prepared.letterbox.height if prepared else None,
            sha256=prepared.sha256 if prepared else None,
            model=self.model_info(),
            confidence_threshold=live.confidence_threshold,
            iou_threshold=live.iou_threshold,
            detections=detections,
            timings_ms=timings,
            processed_at=utc_now_iso(),
            error=error.as_dict() if error else None,
        )

    def _observe(self, result: FrameResult) -> None:
        for stage, ms in result.timings_ms.items():
            if stage not in ("write", "send"):
                self.metrics.stage_seconds.labels(stage=stage).observe(ms / 1000)

    def _count(self, result: FrameResult) -> None:
        outcome = "ok" if result.ok else "failed"
        self.counters[outcome] += 1
        self.counters["detections"] += len(result.detections)
        self.last_result_at = result.processed_at
        self.metrics.frames.labels(outcome=outcome).inc()
        if result.error is not None:
            self.metrics.failures.labels(code=result.error["code"]).inc()
        for det in result.detections:
            self.metrics.detections.labels(label=det.label).inc()

    def _update_depths(self) -> None:
        self.metrics.queue_depth.labels(queue="frames").set(self.frames.qsize())
        self.metrics.queue_depth.labels(queue="prepared").set(self.prepared.qsize())
        self.metrics.queue_depth.labels(queue="done").set(self.done.qsize())

    # -- Predictor (HTTP) -----------------------------------------------------------------------------------
    def predict(self, data: bytes, *, confidence: float | None = None, timeout: float = 30.0) -> FrameResult:
        if not self.ready or self._stop_intake.is_set():
            raise UnavailableError("the module is not ready", 5.0)
        job = FrameJob(f"http/{uuid.uuid4().hex}", Path(), len(data), time.time_ns(), "http", time.monotonic(), data)
        item = self._prepare(job, keep_image=False)
        if isinstance(item, _Failed):
            raise item.error
        future: Future[FrameResult] = Future()
        with self._lock:
            self._requests[id(job)] = _Request(future, confidence)
        try:
            self.prepared.put(item, timeout=min(timeout, 5.0))
        except queue.Full:
            with self._lock:
                self._requests.pop(id(job), None)
            raise UnavailableError("the inference queue is full", 1.0) from None
        try:
            return future.result(timeout)
        except FutureTimeout:
            with self._lock:
                self._requests.pop(id(job), None)
            raise UnavailableError(f"no result within {timeout:.0f} s", 1.0) from None

    def readiness(self) -> tuple[bool, str]:
        if self.fatal_event.is_set():
            return False, f"a pipeline stage died: {self.fatal}"
        if not self.ready:
            return False, "the pipeline is not running"
        if not self.watcher_alive():
            return False, "the input watcher is not running"
        if self.settings.require_gpu and not self.model.on_gpu:
            return False, f"REQUIRE_GPU=true and the active provider is {self.model.provider}"
        return True, "ready"

    def active_provider(self) -> str:
        return str(self.model.provider)

    # -- ModuleControl (direct methods) ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            in_flight = len(self._in_flight)
        return {
            "ready": self.readiness()[0],
            "paused": bool(self._blocked.keys() & _PAUSE_REASONS),
            "intakeBlocked": self.intake_blocked,
            "provider": self.model.provider,
            "model": {"name": self.model.name, "version": self.model.version, "sha256": self.model.sha256},
            "settings": self.live.current().as_twin(),
            "frames": dict(self.counters),
            "inFlight": in_flight,
            "queues": {"frames": self.frames.qsize(), "prepared": self.prepared.qsize(), "done": self.done.qsize()},
            "ledger": self.ledger.counts(),
            "lastResultAt": self.last_result_at,
            "uptimeSeconds": round(time.time() - self.started_at, 1),
        }

    def pause(self) -> None:
        self.set_intake_blocked("paused", True, "paused by direct method or twin")

    def resume(self) -> None:
        self.set_intake_blocked("paused", False)

    def reprocess(self, pattern: str) -> int:
        pattern = pattern.strip().lstrip("/") if isinstance(pattern, str) else ""
        if not pattern or ".." in pattern.split("/") or "\0" in pattern:
            raise ValueError(f"invalid path or glob {pattern!r}")
        entries = self.ledger.finished_matching(pattern)
        queued = 0
        for entry in entries:
            if self._reprocess_one(entry):
                queued += 1
        return queued

    def _reprocess_one(self, entry: LedgerEntry) -> bool:
        """Put one finished frame back on the input share (archive: a copy of the archived original; keep: it is
        there). Never through a symlinked folder, and never over a frame of that name waiting on the share."""
        inp, rel = self.settings.input_dir, entry.rel_path
        mode = self.settings.input_disposition
        if mode == "delete":
            return False  # deleted originals cannot be processed again
        try:
            if mode == "archive":
                place = output_layout.processed_path if entry.state == "done" else output_layout.failed_path
                archived = place(rel)
                if not stat.S_ISREG(share_fs.lstat(self.settings.output_dir, archived).st_mode):
                    return False
                with contextlib.suppress(FileNotFoundError):
                    share_fs.lstat(inp, rel)
                    log.warning("reprocess: %s is waiting on the input share: that frame is left as it is", shown(rel))
                    return False
                self._generations.update(self.ledger.reopen([entry.frame_id]))
                share_fs.copy(self.settings.output_dir, archived, inp, rel, replace=False)
            elif not stat.S_ISREG(share_fs.lstat(inp, rel).st_mode):
                return False
            else:
                self._generations.update(self.ledger.reopen([entry.frame_id]))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:  # a symlinked folder, a frame that arrived meanwhile, the share away
            log.warning("reprocess: not taking %s: %s", shown(rel), exc)
            return False
        if self.note_path is not None:
            self.note_path(str(safe_join(inp, rel)))
        return True

    def enqueue_path(self, rel_path: str, source: str) -> bool:
        path = safe_join(self.settings.input_dir, rel_path)  # raises ValueError when it escapes
        if not is_frame_name(path.name) or self.note_path is None:
            return False
        with self._lock:
            if rel_path in self._in_flight:
                return False
        try:
            share_fs.lstat(self.settings.input_dir, rel_path)  # a symlinked folder on the way is never followed
        except share_fs.OutsideShare as exc:
            log.warning("%s: not taking %s: %s", source, shown(rel_path), exc.strerror)
            return False
        except OSError:
            return False
        return self.note_path(str(path))

    def self_test(self) -> dict[str, Any]:
        from edge_inference.selftest import run_self_test

        return run_self_test(self)


def _share_mount(folder: Path) -> Path | None:
    """The mount point holding `folder` (the share itself, or the share a sub-folder of it lives on)."""
    mount = mount_point_of(folder)
    return None if mount == Path("/") else mount


def _mount_gone(mount: Path | None) -> bool:
    """A share mount remembered at start (`_share_mount`) that is no longer mounted."""
    return mount is not None and not is_mount_point(mount)


def _readable_dir(path: Path) -> bool:
    try:
        with os.scandir(path):
            return True
    except OSError:
        return False


def _source(source: str) -> Any:
    return source if source in ("events", "poll", "scan", "fileEvent", "reprocess", "recovered") else "events"


def _with_confidence(result: FrameResult, confidence: float) -> FrameResult:
    return replace(result, confidence_threshold=confidence)
