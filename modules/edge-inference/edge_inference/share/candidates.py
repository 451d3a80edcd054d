"""The watcher's candidate table: paths that may be frames, each settling until it is complete, then offered.

A candidate is looked at when it is due, not at every tick: the table keeps a heap of due times (a first look,
one more after the settle window, one per offer), so ten thousand candidates settling on an SMB share cost two
stats each, not ten thousand stats per tick. A candidate becomes a frame when it is complete: a close-after-write
or a rename into the tree, or size and mtime unchanged for the settle window, and then opened once more to
revalidate its size (`share_fs.revalidate`). On a mount that caches attributes the settle window is longer than
the cache and a file's mtime is never taken as proof that it is finished (over SMB it stays at the first write
until the writer closes the file).

Intake's verdict on an offer (`Offer`): TAKEN and DROP end the candidate (in keep mode the file version is
remembered in the folder index, so no listing offers it again; a frame taken off the share is forgotten there,
so should its name come back it is new); DEFER (intake full or paused) ends the round; BUSY (its writer holds
it) waits another settle window; RETRY backs off alone (1 s, 2 s ... 60 s) while the others go on.

The table holds at most `max_candidates` paths; a path noted while it is full waits on the share, its folder
marked to be listed again once there is room (share/scanner.py), unless it is asked for by name (`force`).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_inference.share import share_fs
from edge_inference.share.folder_index import FolderIndex, split_path

log = logging.getLogger(__name__)


class Offer(enum.Enum):
    TAKEN = "taken"  # intake took it (or it was already done): forget the candidate
    DEFER = "defer"  # intake is full or paused: keep it on the share, offer again later
    DROP = "drop"  # nothing to do (already finished, gone, not inside the share): forget the candidate
    BUSY = "busy"  # its writer still holds it: this one waits another settle window
    RETRY = "retry"  # this one cannot be taken now (its claim failed): it backs off, the others go on


FrameOffer = Callable[[str, os.stat_result, str], Offer]
Warn = Callable[..., None]

_FIRST_BACKOFF = 1.0  # seconds before a candidate whose offer failed is offered again; doubles each time
_MAX_BACKOFF = 60.0
_SHARE_AWAY_RETRY = 1.0  # seconds before a candidate whose stat failed with a share error is looked at again


@dataclass
class _Candidate:
    rel: str
    signature: tuple[int, int] | None
    changed_at: float
    complete: bool
    source: str
    backoff: float = 0.0
    ticket: int = 0  # its live entry in the due heap (older entries are stale)


class CandidateTable:
    """The bounded table of candidates and their due heap; thread-safe (notes come from the observer, the scan
    thread and the front ends; the settle thread offers)."""

    def __init__(
        self,
        index: FolderIndex,
        settle: float,
        trust_mtime: bool,
        max_candidates: int,
        *,
        keeps: bool,
        warn: Warn,
    ) -> None:
        self.index = index
        self.settle = settle
        self.trust_mtime = trust_mtime
        self.max_candidates = max_candidates
        self.keeps = keeps
        self._warn_once = warn
        self._lock = threading.Lock()
        self._candidates: dict[str, _Candidate] = {}
        self._due: list[tuple[float, int, str]] = []  # (due time, ticket, path): a heap
        self._tickets = itertools.count(1)

    def __len__(self) -> int:
        with self._lock:
            return len(self._candidates)

    def __contains__(self, path: str) -> bool:
        with self._lock:
            return path in self._candidates

    def room(self) -> int:
        with self._lock:
            return self.max_candidates - len(self._candidates)

    def add(self, path: str, rel: str, *, complete: bool, source: str, force: bool) -> bool:
        """Note a possible frame; True when it was not a candidate yet."""
        now, full = time.monotonic(), False
        with self._lock:
            known = self._candidates.get(path)
            if known is None:
                if not force and len(self._candidates) >= self.max_candidates:
                    full = True
                else:
                    cand = self._candidates[path] = _Candidate(rel, None, now, complete, source)
                    self._schedule(path, cand, now)
                    self.index.remember(rel)  # pending: listings skip it until it is settled
            elif complete and not known.complete:
                known.complete = True
                self._schedule(path, known, now)
        if full:
            self.index.folder(split_path(rel)[0]).incomplete = True  # the scan finds it again once there is room
        return known is None and not full

    def _schedule(self, path: str, cand: _Candidate, at: float) -> None:
        """Look at `cand` again at `at` (the lock is held)."""
        cand.ticket = next(self._tickets)
        heapq.heappush(self._due, (at, cand.ticket, path))

    def settle_once(self, offer: FrameOffer, stopping: Callable[[], bool]) -> None:
        """Look at every candidate that is due, and offer the complete ones until intake is full."""
        wall = time.time()
        while not stopping():
            now = time.monotonic()
            with self._lock:
                if not self._due or self._due[0][0] > now:
                    return
                _at, ticket, path = heapq.heappop(self._due)
                cand = self._candidates.get(path)
                if cand is None or cand.ticket != ticket:
                    continue  # stale: forgotten or rescheduled
            st, retry_at = self._ready(path, cand, now, wall)
            if st is None:
                if retry_at is not None:
                    with self._lock:
                        if self._candidates.get(path) is cand:
                            self._schedule(path, cand, retry_at)
                continue
            try:
                verdict = offer(cand.rel, st, cand.source)
            except Exception:  # one frame's failure never stops the watcher: it backs off, the others go on
                self._warn_once(path, "offering %s failed (backing off)", cand.rel, exc_info=True)
                verdict = Offer.RETRY
            if self._settled(path, cand, st, verdict):
                return  # intake is full: stop offering until the next tick

    def _settled(self, path: str, cand: _Candidate, st: os.stat_result, verdict: Offer) -> bool:
        """Apply intake's verdict to a candidate; True when intake is full (DEFER)."""
        now = time.monotonic()
        with self._lock:
            if verdict is Offer.DEFER:
                self._schedule(path, cand, now)
                return True
            if verdict is Offer.BUSY:
                cand.changed_at, cand.complete = now, False
                self._schedule(path, cand, now + self.settle)
            elif verdict is Offer.RETRY:
                cand.backoff = min(_MAX_BACKOFF, cand.backoff * 2 if cand.backoff else _FIRST_BACKOFF)
                self._schedule(path, cand, now + cand.backoff)
            else:
                self._candidates.pop(path, None)
        if self.keeps and verdict in (Offer.TAKEN, Offer.DROP):
            self.index.remember(cand.rel, st.st_size, st.st_mtime_ns)  # this version stays: dealt with
        elif verdict in (Offer.TAKEN, Offer.DROP):
            self.index.forget(cand.rel)  # moved off the share (or to be noted again): a name that comes back is new
        return False

    def _ready(
        self, path: str, cand: _Candidate, now: float, wall: float
    ) -> tuple[os.stat_result | None, float | None]:
        """(the stat of a candidate complete now, None) or (None, when to look again; None: forgotten)."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            self._forget(path)
            return None, None
        except OSError as exc:  # a passing share error: the candidate stays
            self._warn_once(path, "cannot stat %s: %s (the share may be away)", path, exc.strerror)
            return None, now + _SHARE_AWAY_RETRY
        signature = (st.st_size, st.st_mtime_ns)
        if cand.signature is None:
            cand.signature = signature
            if self.trust_mtime:  # first look on a local file system: a file untouched for the window is ready
                cand.changed_at = now - min(max(0.0, wall - st.st_mtime), self.settle)
        elif signature != cand.signature:
            cand.signature, cand.changed_at, cand.complete = signature, now, False
            return None, now + self.settle
        if not stat.S_ISREG(st.st_mode):
            return st, None  # a FIFO, device or symlink: intake refuses it without opening it
        if not (cand.complete or now - cand.changed_at >= self.settle):
            return None, cand.changed_at + self.settle
        if st.st_size == 0 and not cand.complete and now - cand.changed_at < max(self.settle, 2.0):
            return None, cand.changed_at + max(self.settle, 2.0)  # an empty file: often a writer not started yet
        try:
            fresh = share_fs.revalidate(Path(path))
        except FileNotFoundError:
            self._forget(path)
            return None, None
        except OSError as exc:
            if share_fs.is_busy(exc):  # a writer holds it with a deny share mode: not finished
                cand.changed_at, cand.complete = now, False
                return None, now + self.settle
            self._warn_once(path, "cannot open %s: %s (the share may be away)", path, exc.strerror)
            return None, now + _SHARE_AWAY_RETRY
        if (fresh.st_size, fresh.st_mtime_ns) != signature:  # the cached attributes were behind
            cand.signature, cand.changed_at, cand.complete = (fresh.st_size, fresh.st_mtime_ns), now, False
            return None, now + self.settle
        return fresh, None

    def _forget(self, path: str) -> None:
        with self._lock:
            cand = self._candidates.pop(path, None)
        if cand is not None:
            self.index.forget(cand.rel)
