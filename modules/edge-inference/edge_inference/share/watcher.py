"""The input-share watcher: finds complete frames and hands them to intake.

Three sources feed one candidate table: watchdog (inotify on local file systems, polling on cifs/smb/nfs/
fuse mounts, where inotify never sees other machines' writes), a start-up scan of the backlog, and a
periodic reconciliation sweep so that a missed event never loses a frame. A candidate becomes a frame
when it is complete: a close-after-write or a rename into the tree, or size and mtime unchanged for the
settle window. Temp and hidden names are ignored; symlinks are never followed.

Intake may refuse a ready frame (queue full, paused, output share full): it then stays on the share as a
candidate and is offered again later - frames wait on the share, not in memory.

Threads: watchdog's observer (and its emitter) notes paths; two workers (`workers.py`) do the rest:
`watcher-settle` offers candidates once complete and checks that the observer is still alive (a dead
observer kills the worker, so the module stops and IoT Edge restarts it), `watcher-sweep` walks the share
every RESCAN_INTERVAL_SECONDS.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from edge_inference.errors import WorkerDied
from edge_inference.share.mounts import filesystem_type, needs_polling
from edge_inference.vision.decode import IMAGE_EXTENSIONS
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".filepart", ".crdownload", ".partial", ".swp")


class Offer(enum.Enum):
    TAKEN = "taken"  # intake took it (or it was already done): forget the candidate
    DEFER = "defer"  # intake is full or paused: keep it on the share, offer again later
    DROP = "drop"  # nothing to do (already finished, gone): forget the candidate


def is_frame_name(name: str) -> bool:
    """An image file name that is not hidden or temporary."""
    if name.startswith(".") or name.startswith("~$"):
        return False
    lower = name.lower()
    if lower.endswith(_TEMP_SUFFIXES):
        return False
    return os.path.splitext(lower)[1] in IMAGE_EXTENSIONS


def resolve_mode(input_dir: Path, mode: str) -> str:
    """`events` or `poll` for WATCH_MODE (auto: by the file-system type of the input share)."""
    if mode != "auto":
        return mode
    fs_type = filesystem_type(input_dir)
    chosen = "poll" if needs_polling(fs_type) else "events"
    log.info("input share %s is on %s: watching with %s", input_dir, fs_type, chosen)
    return chosen


@dataclass
class _Candidate:
    signature: tuple[int, int] | None
    changed_at: float
    complete: bool
    source: str


FrameOffer = Callable[[str, os.stat_result, str], Offer]


class FrameWatcher:
    """Watches INPUT_DIR recursively and offers complete frames to `offer(rel_path, stat, source)`."""

    def __init__(
        self,
        input_dir: Path,
        offer: FrameOffer,
        *,
        mode: str = "auto",
        settle_seconds: float = 0.3,
        poll_interval: float = 1.0,
        rescan_interval: float = 30.0,
        exclude_dirs: tuple[str, ...] = (".edge-inference",),
        on_sweep: Callable[[], None] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.input_dir = input_dir
        self._root = os.path.realpath(input_dir)
        self._offer = offer
        self.mode = resolve_mode(input_dir, mode)
        self.settle = settle_seconds
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.exclude_dirs = exclude_dirs
        self._on_sweep = on_sweep
        self._lock = threading.Lock()
        self._candidates: dict[str, _Candidate] = {}
        self._observer: BaseObserver | None = None
        self._warned: set[str] = set()
        self.running = False
        tick = max(0.02, min(0.1, settle_seconds / 3 if settle_seconds else 0.05))
        self._settler = PeriodicWorker("watcher-settle", tick, supervisor, tick=self._settle_tick, daemon=True)
        sweep_every = rescan_interval if rescan_interval > 0 else 3600.0
        self._sweeper = PeriodicWorker("watcher-sweep", sweep_every, supervisor, tick=self._sweep_tick, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.input_dir.mkdir(parents=True, exist_ok=True)
        handler = _EventHandler(self)
        observer: BaseObserver = (
            PollingObserver(timeout=self.poll_interval) if self.mode == "poll" else Observer(timeout=0.2)
        )
        observer.schedule(handler, str(self.input_dir), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.sweep()  # the backlog: frames dropped while the module was down
        self._settler.start()
        self._sweeper.start()
        self.running = True
        log.info("watching %s (%s mode, settle %.2fs)", self.input_dir, self.mode, self.settle)

    def stop(self, timeout: float = 5.0) -> None:
        self.running = False
        self._settler.request_stop()
        self._sweeper.request_stop()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        self._settler.join(timeout)
        self._sweeper.join(timeout)

    def alive(self) -> bool:
        return self.running and self._observer_alive() and self._settler.is_alive() and self._sweeper.is_alive()

    @property
    def error(self) -> BaseException | None:
        """Why the watcher died (one of its workers), or None."""
        return self._settler.error or self._sweeper.error

    def _observer_alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    # -- candidates -----------------------------------------------------------------------------------------
    def note(self, path: str, *, complete: bool = False, source: str = "events") -> bool:
        """Remember a possible frame. True when it was not a candidate yet."""
        rel = self.relative(path)
        if rel is None:
            return False
        with self._lock:
            known = self._candidates.get(path)
            if known is None:
                self._candidates[path] = _Candidate(None, time.monotonic(), complete, source)
            elif complete:
                known.complete = True
        if complete:
            self._settler.wake()
        return known is None

    def relative(self, path: str) -> str | None:
        """The POSIX relative path of a frame inside the share, or None for anything to ignore."""
        rel = os.path.relpath(path, self.input_dir)
        if rel.startswith("..") or os.path.isabs(rel):
            return None
        parts = rel.split(os.sep)
        if parts[0] in self.exclude_dirs or any(p.startswith(".") for p in parts[:-1]):
            return None
        if not is_frame_name(parts[-1]):
            return None
        if any("\\" in p for p in parts):
            # legal on Linux, but safe_join() refuses it: offering it would kill the watcher (a crash loop)
            self._warn_once(path, "ignoring %r: a backslash in a share path is not supported", rel)
            return None
        return "/".join(parts)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._candidates)

    def sweep(self) -> int:
        """Walk the share and note every frame file; returns how many new candidates it found."""
        found = 0
        for dirpath, dirnames, filenames in os.walk(self.input_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in self.exclude_dirs)
            for name in sorted(filenames):
                if is_frame_name(name) and self.note(os.path.join(dirpath, name), source="scan"):
                    found += 1
        if self._on_sweep is not None:
            self._on_sweep()
        if found:
            log.info("sweep found %d frames not yet seen", found)
        return found

    def _sweep_tick(self) -> None:
        if self.rescan_interval > 0:
            self.sweep()

    def _settle_tick(self) -> None:
        if self.running and not self._observer_alive():
            raise WorkerDied("the file-system observer thread of the input watcher died")
        self._settle_once()

    def _settle_once(self) -> None:
        now, wall = time.monotonic(), time.time()
        with self._lock:
            items = list(self._candidates.items())
        for path, cand in items:
            if self._settler.stopping:
                return
            try:
                st = os.stat(path, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                self._forget(path)
                continue
            except OSError as exc:
                self._warn_once(path, "cannot stat %s: %s", path, exc.strerror)
                continue
            signature = (st.st_size, st.st_mtime_ns)
            if cand.signature is None:
                # First look: a file untouched for the settle window (backlog) is ready right away.
                age = max(0.0, wall - st.st_mtime)
                cand.changed_at = now - min(age, self.settle)
                cand.signature = signature
            elif signature != cand.signature:
                cand.signature, cand.changed_at, cand.complete = signature, now, False
                continue
            special = not stat.S_ISREG(st.st_mode)
            if not (special or cand.complete or now - cand.changed_at >= self.settle):
                continue
            if not special and st.st_size == 0 and not cand.complete and now - cand.changed_at < max(self.settle, 2.0):
                continue  # an empty file is often a writer that has not written yet: give it longer
            rel = self.relative(path)
            if rel is None:
                self._forget(path)
                continue
            verdict = self._offer(rel, st, cand.source)
            if verdict is Offer.DEFER:
                return  # intake is full: stop offering until the next tick
            self._forget(path)

    def _forget(self, path: str) -> None:
        with self._lock:
            self._candidates.pop(path, None)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)


class _EventHandler(FileSystemEventHandler):
    """watchdog callback: runs on the observer thread, so it only notes paths."""

    def __init__(self, watcher: FrameWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind == "moved":
            self.watcher.note(os.fsdecode(event.dest_path), complete=True, source=self.watcher.mode)
        elif kind == "closed":
            self.watcher.note(os.fsdecode(event.src_path), complete=True, source=self.watcher.mode)
        elif kind in ("created", "modified"):
            self.watcher.note(os.fsdecode(event.src_path), source=self.watcher.mode)
