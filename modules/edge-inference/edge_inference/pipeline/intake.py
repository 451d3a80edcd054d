"""Intake: where a frame is claimed. The watcher offers complete frames; intake claims them and queues them.

    watcher --offer(rel_path, stat, source)--> intake: gate open? regular file? not done yet? room in the
    frames queue? -> claim (atomic rename into this replica's claim area, share/claims.py) -> ledger `claimed`
    -> in flight (pipeline/gate.py) -> frames queue

An answer of DEFER leaves every frame on the share (the gate is shut, the queue is full): the watcher offers them
again later. A claim that fails is this frame's alone (share/claims.py ClaimRefusals): BUSY (its writer still
holds it), RETRY (it backs off, the others go on) or DROP (a symlinked folder: not in the share). Frames wait on
the share, never in memory; a frame waiting for its writer (share/arrivals.py) is not offered into the queue
until `take_again` hands it back.

`reconcile_claims` looks at the claim area: frames a crash, a full share or a silent replica left there are
finished (their result is already written: only the disposition is due) or queued again.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from edge_inference.entities import FrameJob
from edge_inference.errors import FrameError
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import StageQueues
from edge_inference.pipeline.finish import Finisher
from edge_inference.pipeline.gate import INPUT_UNAVAILABLE, IntakeGate
from edge_inference.share import share_fs
from edge_inference.share.arrivals import ArrivingFrames
from edge_inference.share.claims import ClaimArea, ClaimRefusals
from edge_inference.share.guard import ShareGuard
from edge_inference.share.ledger import Ledger
from edge_inference.share.watcher import Offer

log = logging.getLogger(__name__)

_SOURCES = ("events", "poll", "scan", "fileEvent", "reprocess", "recovered")


class Intake:
    """The watcher's `offer`, and the reconciliation of the claim area."""

    def __init__(
        self,
        claims: ClaimArea,
        ledger: Ledger,
        gate: IntakeGate,
        guard: ShareGuard,
        queues: StageQueues,
        finisher: Finisher,
        arrivals: ArrivingFrames,
        metrics: MetricsRegistry,
    ) -> None:
        self.claims = claims
        self.ledger = ledger
        self.gate = gate
        self.guard = guard
        self.queues = queues
        self.finisher = finisher
        self.arrivals = arrivals
        self.metrics = metrics
        self.refusals = ClaimRefusals()
        self._lock = threading.Lock()  # the frames queue is put into from here alone: check and put in one step

    def offer(self, rel_path: str, st: os.stat_result, source: str) -> Offer:
        """The watcher's callback for a complete frame on the share."""
        if not self.gate.accepting():
            return Offer.DEFER
        if not stat.S_ISREG(st.st_mode):
            self._refuse_special(rel_path, st)
            return Offer.DROP
        job = FrameJob(rel_path, Path(), st.st_size, st.st_mtime_ns, _source(source), time.monotonic())
        frame_id = job.frame_id
        with self._lock:
            if self.gate.in_flight(rel_path) or self.arrivals.waiting(rel_path):
                return Offer.DROP
            if not self.claims.moves_files and self.ledger.is_finished(frame_id):
                return Offer.DROP
            if self.queues.frames.full():
                return Offer.DEFER
            try:
                path = self.claims.claim(rel_path)
            except OSError as exc:  # one frame's claim failing never stops the others: this one waits alone
                if share_fs.is_transient(exc):
                    self.gate.want_reconcile()  # the housekeeping looks at the share at its next round
                return Offer(self.refusals.verdict(rel_path, exc))
            self.refusals.taken(rel_path)
            if path is None:
                return Offer.DROP  # gone: another replica took it, or the writer removed it
            self.ledger.record(frame_id, rel_path, st.st_size, st.st_mtime_ns, "claimed")
            self.gate.begin(rel_path, frame_id)
            self.queues.frames.put_nowait(
                FrameJob(rel_path, path, st.st_size, st.st_mtime_ns, job.source, job.enqueued_at)
            )
        self.queues.show(self.metrics)
        return Offer.TAKEN

    def finished(self, items: list[tuple[str, os.stat_result]]) -> set[str]:
        """Keep mode: the relative paths among these file versions that the ledger has finished (the watcher
        remembers them instead of offering them again, e.g. a kept share found again after a restart)."""
        if self.claims.moves_files:
            return set()
        ids = {FrameJob(rel, Path(), st.st_size, st.st_mtime_ns, "scan", 0.0).frame_id: rel for rel, st in items}
        return {ids[frame_id] for frame_id in self.ledger.finished_among(list(ids))}

    def _refuse_special(self, rel_path: str, st: os.stat_result) -> None:
        """A FIFO, device node, socket or symlink on the share: never opened or followed, reported once."""
        job = FrameJob(rel_path, Path(), st.st_size, st.st_mtime_ns, "scan", time.monotonic())
        if self.ledger.is_finished(job.frame_id):
            return
        kind = stat.filemode(st.st_mode)
        error = FrameError(FrameError.NOT_A_FILE, f"{rel_path}: not a regular file ({kind}); left in place, not read")
        log.warning("%s", error.message)
        self.finisher.refuse(job, error)

    def reconcile_claims(self) -> int:
        """Finish or re-queue frames left in our claim area (a crash, a full share, a silent replica)."""
        self.gate.take_reconcile()
        if self.gate.closed:
            return 0
        try:
            self.claims.adopt_stale()
            claimed = list(self.claims.claimed())
        except OSError as exc:  # the input share is away: try again later, forget nothing
            log.warning("cannot read the claim area: %s (retried)", exc)
            self.gate.want_reconcile()
            if not self.guard.input_available():  # housekeeping resumes intake, and reconciles, once it is back
                self.gate.block(INPUT_UNAVAILABLE, f"input share unavailable ({exc.strerror})")
            return 0
        queued = 0
        for rel_path, path, st in claimed:
            job = FrameJob(rel_path, path, st.st_size, st.st_mtime_ns, "recovered", time.monotonic())
            with self._lock:
                if self.gate.in_flight(rel_path) or self.arrivals.waiting(rel_path):
                    continue
                state = self.ledger.state(job.frame_id)
                if state not in ("done", "failed"):
                    if self.gate.is_blocked() or self.queues.frames.full():
                        self.gate.want_reconcile()
                    else:
                        self.gate.begin(rel_path, job.frame_id)
                        self.queues.frames.put_nowait(job)
                        queued += 1
                    continue
            self.finisher.dispose(rel_path, state == "done")  # its result is written: only this was due
        if queued:
            log.info("resumed %d claimed frames left unfinished", queued)
        return queued

    def take_again(self, job: FrameJob) -> bool:
        """Queue a frame that waited for its writer (share/arrivals.py); False when the queue is full (it waits on)."""
        with self._lock:
            if self.gate.in_flight(job.rel_path) or self.queues.frames.full():
                return False
            self.gate.begin(job.rel_path, job.frame_id)
            self.queues.frames.put_nowait(job)
        return True


def _source(source: str) -> Any:
    return source if source in _SOURCES else "events"
