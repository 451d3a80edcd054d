"""Frames that decoded as truncated (or empty) while their writer may still be writing them.

An in-place writer over SMB can be caught in the middle of a file: with the share mode Linux's cifs client
uses (others may read, write and delete) the claim rename succeeds while the writer's handle stays open, and
the settle window only sees what the attribute cache shows. Such a frame gets no result yet - nothing goes
upstream for it - and waits where it is (in the claim area, or on the share in keep mode). It is decoded again
- once it has changed and then stayed unchanged for the settle window (its writer went on and finished), or
- once it has stayed unchanged for TRUNCATED_GRACE_SECONDS: then it is final, and a frame still truncated
  fails with its error (`corrupt_image`, `empty_file`) as any other bad frame.
On a local file system the mtime is trusted: a file whose mtime is older than the grace is final at once. A
restart finds a waiting frame where it was, and it waits again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_inference.entities import FrameJob
from edge_inference.errors import FrameError
from edge_inference.names import shown

log = logging.getLogger(__name__)

WAIT_CODES = frozenset({FrameError.CORRUPT, FrameError.EMPTY})  # what a file cut short decodes as


@dataclass
class _Waiting:
    job: FrameJob
    signature: tuple[int, int]
    since: float  # time.monotonic() of the last change seen (or of the first look)
    changed: bool  # it changed while waiting: its writer was still at it


class ArrivingFrames:
    """The frames waiting for their writer; `release_due` hands back the ones to decode again."""

    def __init__(self, grace: float, settle: float, trust_mtime: bool, stat: Callable[[str], os.stat_result]) -> None:
        self.grace = grace
        self.settle = settle
        self.trust_mtime = trust_mtime
        self._stat = stat  # rel path -> the frame's stat where it waits (confined; raises OSError)
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._final: dict[str, tuple[int, int]] = {}  # released as the grace ran out: this version's error stands

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def waiting(self, rel_path: str) -> bool:
        with self._lock:
            return rel_path in self._waiting

    def hold(self, job: FrameJob, error: FrameError) -> bool:
        """True when the frame waits here instead of failing now; False when its error is final."""
        if job.data is not None or error.code not in WAIT_CODES or self.grace <= 0:
            return False
        now, signature = time.monotonic(), (job.size, job.mtime_ns)
        with self._lock:
            if self._final.pop(job.rel_path, None) == signature:
                return False
            known = self._waiting.get(job.rel_path)
            if known is not None and known.signature == signature:
                return True  # offered again while it waits: its clock goes on
            unchanged = max(0.0, time.time() - job.mtime_ns / 1e9) if self.trust_mtime else 0.0
            if unchanged >= self.grace:
                return False
            self._waiting[job.rel_path] = _Waiting(job, signature, now - unchanged, False)
        log.info(
            "%s: %s; it may still be arriving: decoded again once its writer is done (final in %.0f s)",
            shown(job.rel_path),
            error.message,
            self.grace - unchanged,
        )
        return True

    def release_due(self, take: Callable[[FrameJob], bool]) -> int:
        """Offer `take` each frame due for another decode; the ones it takes stop waiting. Returns how many."""
        with self._lock:
            items = list(self._waiting.items())
        released = 0
        for rel_path, wait in items:
            try:
                st = self._stat(rel_path)
            except FileNotFoundError:
                self._drop(rel_path)  # gone (removed by its writer or by hand): nothing to do
                continue
            except (OSError, ValueError):
                continue  # the share is away: it waits on
            now, signature = time.monotonic(), (st.st_size, st.st_mtime_ns)
            if signature != wait.signature:
                wait.signature, wait.since, wait.changed = signature, now, True
                continue
            final = now - wait.since >= self.grace
            if not final and not (wait.changed and now - wait.since >= self.settle):
                continue
            job = FrameJob(rel_path, wait.job.path, st.st_size, st.st_mtime_ns, "recovered", now)
            if final:
                with self._lock:
                    self._final[rel_path] = signature
            taken = take(job)  # outside our lock: `take` takes the pipeline's, which holds it while asking `waiting`
            with self._lock:
                if taken:
                    self._waiting.pop(rel_path, None)
                    released += 1
                else:
                    self._final.pop(rel_path, None)
        return released

    def _drop(self, rel_path: str) -> None:
        with self._lock:
            self._waiting.pop(rel_path, None)
            self._final.pop(rel_path, None)
