"""The end of a share frame: its result made durable, its telemetry stored, the ledger told, the original moved.

    group write (results/, annotated/, failed/ .error.json: one durable flush) -> telemetry (one outbox
    transaction) -> ledger (done | failed) -> review copies of the chosen frames (pipeline/review.py) ->
    the originals' archive or failed/ paths recorded in the output catalog -> disposition of the original
    (archive | delete | keep; failed/)

Telemetry is stored before the ledger marks the frames done: a kill in between processes them again (same
message ids, which the outbox and upstream de-duplicate) instead of losing their messages. Under light load a
group is one frame. The frames that cannot finish now stay claimed: a result the output share refuses pauses
intake (`outputFull` / `outputError`) until the housekeeping sees the share take writes again; a file that
vanished with its input share pauses intake (`inputUnavailable`); a frame cut short while its writer may still
be at it waits for it (share/arrivals.py); either way the claim area is looked at again
later, and nothing is lost. A write that fails while the share answers is a frame's own failure: the group is
written again frame by frame to find it, its unfinished attempt is noted (quarantine.py), and a frame whose
outputs raise something else fails alone with `write_failed`.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import Protocol

from edge_inference.entities import FrameJob, FrameResult, PreparedFrame
from edge_inference.errors import FrameError, OutputFullError
from edge_inference.names import shown
from edge_inference.ops.health import FailureRunMonitor
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Failed, Finished
from edge_inference.pipeline.gate import INPUT_UNAVAILABLE, OUTPUT_ERROR, OUTPUT_FULL, IntakeGate
from edge_inference.pipeline.outcomes import FrameCounters, ResultMaker
from edge_inference.pipeline.quarantine import FrameAttempts
from edge_inference.pipeline.review import ReviewSelector
from edge_inference.share import output_layout as layout
from edge_inference.share import share_fs
from edge_inference.share.arrivals import ArrivingFrames
from edge_inference.share.catalog import OutputCatalog, OutputFile
from edge_inference.share.claims import ClaimArea
from edge_inference.share.guard import ShareGuard
from edge_inference.share.ledger import Ledger
from edge_inference.share.results import ResultWriter

log = logging.getLogger(__name__)


class ResultListener(Protocol):
    """Telemetry: told about every finished share frame, a group at a time (`ops/publisher.py`)."""

    def on_result(self, result: FrameResult) -> None: ...

    def group(self) -> AbstractContextManager[object]: ...


class Finisher:
    """Makes groups of finished share frames durable and disposes of their originals."""

    def __init__(
        self,
        writer: ResultWriter,
        ledger: Ledger,
        claims: ClaimArea,
        gate: IntakeGate,
        guard: ShareGuard,
        telemetry: ResultListener,
        results: ResultMaker,
        counters: FrameCounters,
        failures: FailureRunMonitor,
        attempts: FrameAttempts,
        arrivals: ArrivingFrames,
        metrics: MetricsRegistry,
        catalog: OutputCatalog | None = None,
        review: ReviewSelector | None = None,
    ) -> None:
        self.writer = writer
        self.catalog = catalog
        self.review = review
        self.ledger = ledger
        self.claims = claims
        self.gate = gate
        self.guard = guard
        self.telemetry = telemetry
        self.results = results
        self.counters = counters
        self.failures = failures
        self.attempts = attempts
        self.arrivals = arrivals
        self.metrics = metrics

    def finish(self, group: list[Finished]) -> None:
        """Write a group of results with one durable flush, then telemetry (one outbox transaction), ledger,
        metrics and the originals' disposition."""
        t0 = time.monotonic()
        try:
            self._write_outputs(group)
        except (OutputFullError, OSError) as exc:
            # a passing network error (EIO, ESTALE...) or a share that does not answer is the share's, not the
            # frame's; else the failure is a frame's own: find it, and it counts
            share_away = share_fs.is_transient(exc) or not self.guard.output_writable()
            if not share_away and len(group) > 1:
                for f in group:
                    self.finish([f])
                return
            error = group[0].result.error
            if share_away or error is None or error.get("code") != FrameError.QUARANTINED:
                for f in group:
                    self.attempts.retry_later(f.job, f"cannot write its outputs: {exc}", share_away=share_away)
                    self.output_failed(f.job, exc)
                return
            group = [self._unwritable(group[0], exc)]  # quarantined and still unwritable: the ledger alone says so
        except Exception as exc:  # not a share error: find the frame at fault, and fail it alone
            if len(group) > 1:
                for f in group:
                    self.finish([f])
                return
            group = [self._unwritable(group[0], exc)]
        write_s = (time.monotonic() - t0) / len(group)
        t1 = time.monotonic()
        with self.telemetry.group():
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
        if self.review is not None:
            for f in group:
                self.review.consider(f)
        self._record_disposals([(f.job.rel_path, f.result.ok) for f in group])
        for f in group:
            self.dispose(f.job.rel_path, f.result.ok, mount_checked=True, recorded=True)  # checked for the group
            self.gate.end(f.job.rel_path)
            self.metrics.stage_seconds.labels(stage="write").observe(write_s)
            self.metrics.stage_seconds.labels(stage="send").observe(send_s)
            self.counters.observe(f.result)
            self.counters.count(f.result)
            self.failures.record(f.result.ok)
        log.debug("wrote %d results in %.1f ms", len(group), (time.monotonic() - t0) * 1000)

    def _write_outputs(self, group: list[Finished]) -> None:
        self.guard.check_output_mounted()
        for f in group:
            if isinstance(f.item, PreparedFrame) and f.item.image is not None and f.live.save_annotated:
                self.writer.write_annotated(f.job.rel_path, f.item.image, f.result)
            if f.result.error is not None:
                self.writer.write_error(f.job.rel_path, f.result.error, {"frameId": f.job.frame_id})
        self.writer.write_results([f.result for f in group])  # the mark of finished frames

    def _unwritable(self, f: Finished, exc: Exception) -> Finished:
        """A frame whose outputs raised something other than a share error: it fails with `write_failed`, its
        error result written instead; if even that cannot be written, the ledger alone marks it failed."""
        error = FrameError(FrameError.WRITE_FAILED, f"cannot write the outputs: {type(exc).__name__}: {exc}"[:500])
        log.error("%s: %s", shown(f.job.rel_path), error.message, exc_info=exc)
        failed = Finished(
            f.job,
            Failed(f.job, error, {}),
            self.results.make(f.job, None, f.result.model, error=error, live=f.live),
            f.live,
        )
        try:
            self._write_outputs([failed])
        except Exception as again:
            log.error("%s: not even its error result can be written (%s)", shown(f.job.rel_path), again)
        return failed

    def _record_disposals(self, frames: list[tuple[str, bool]]) -> None:
        """Record in the output catalog where the originals are about to go (processed/, failed/), with their sizes,
        before they move: a file moved but never recorded would be out of the retention's reach."""
        if self.catalog is None:
            return
        files = []
        for rel_path, ok in frames:
            if ok and self.claims.disposition != "archive":
                continue
            target = layout.processed_path(rel_path) if ok else layout.failed_path(rel_path)
            try:
                size = share_fs.lstat(*self.claims.location(rel_path)).st_size
            except (OSError, ValueError):
                continue  # not there now: the disposition fails too and is retried with its own record
            files.append(OutputFile(target, rel_path, size))
        self.catalog.record(files)

    def dispose(self, rel_path: str, ok: bool, *, mount_checked: bool = False, recorded: bool = False) -> None:
        """Archive, delete or keep the original of a finished frame (failed ones go to failed/)."""
        if not recorded:
            self._record_disposals([(rel_path, ok)])
        try:
            if not mount_checked and (not ok or self.claims.disposition == "archive"):  # writes to the output
                self.guard.check_output_mounted()
            self.claims.dispose(rel_path, ok)
        except OSError as exc:
            log.error("cannot %s %s: %s (retried later)", self.claims.disposition, shown(rel_path), exc)
            self.gate.want_reconcile()
            if not self.guard.output_writable():  # retried when the output share answers, not every second till then
                self.gate.block(OUTPUT_ERROR, f"output share: {exc}")
        except Exception as exc:  # this frame's path, not the share: logged, never the dispatcher's death
            log.error("cannot %s %s: %s", self.claims.disposition, shown(rel_path), exc, exc_info=exc)

    def refuse(self, job: FrameJob, error: FrameError) -> None:
        """A file that is never read (a FIFO, a device, a symlink): its result and .error.json, once."""
        result = self.results.make(job, None, error=error)
        try:
            self.writer.write_result(result)
            self.writer.write_error(job.rel_path, error.as_dict())
        except OSError as exc:
            log.error("cannot record the refusal of %s: %s", shown(job.rel_path), exc)
            return
        self.ledger.record(job.frame_id, job.rel_path, job.size, job.mtime_ns, "failed")
        self.counters.count(result)

    def hold_for_writer(self, job: FrameJob, error: FrameError) -> bool:
        """A share frame that decoded as truncated or empty while its writer may still be at it waits for it
        (share/arrivals.py) with no result; True when it waits. The attempt is forgiven: the writer's doing."""
        if job.source == "http" or not self.arrivals.hold(job, error):
            return False
        self.attempts.retry_later(job, error.message, share_away=True)
        self.gate.end(job.rel_path)  # it waits where it is: `arrivals` hands it back to intake
        return True

    def input_vanished(self, job: FrameJob, error: FrameError) -> None:
        """Keep the frame (claimed, no result), pause intake until the input share answers again; the attempt is
        forgiven (the share, not the frame, is at fault)."""
        self.attempts.retry_later(job, error.message, share_away=True)
        self.gate.end(job.rel_path)
        if self.claims.moves_files or not self.guard.input_readable():
            log.warning("%s: %s; the input share looks unavailable: kept for later", shown(job.rel_path), error.message)
            self.gate.block(INPUT_UNAVAILABLE, f"input share unavailable ({error.message})")
        self.gate.want_reconcile()

    def output_failed(self, job: FrameJob, exc: BaseException) -> None:
        """The result could not be written: keep the frame claimed, pause intake, retry when space returns."""
        full = isinstance(exc, OutputFullError)
        log.error("cannot write the result of %s: %s", shown(job.rel_path), exc)
        self.gate.end(job.rel_path)
        if not self.claims.moves_files:
            self.ledger.record(job.frame_id, job.rel_path, job.size, job.mtime_ns, "claimed")
        self.gate.block(OUTPUT_FULL if full else OUTPUT_ERROR, f"output share: {exc}")
        self.gate.want_reconcile()
