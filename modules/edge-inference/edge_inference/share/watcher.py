"""The input-share watcher: finds complete frames and hands them to intake.

Three sources feed one candidate table: watchdog (inotify on local file systems, polling on cifs/smb/nfs/
fuse mounts, where inotify never sees other machines' writes), a start-up scan of the backlog, and a
periodic reconciliation sweep so that a missed event never loses a frame. A candidate becomes a frame
when it is complete: a close-after-write or a rename into the tree, or size and mtime unchanged for the
settle window, and then opened once more to revalidate its size (`share_fs.revalidate`). Temp and hidden
names are ignored; any other name without an image extension is named once in a WARNING line and left where it
is; symlinks are never followed.

On a mount that caches attributes (SMB, NFS, FUSE) the settle window is longer than the cache
(`mounts.settle_window`), and a file's mtime is never taken as proof that it is finished: over SMB it stays
at the first write until the writer closes the file.

Intake may refuse a ready frame: for all frames (queue full, paused, output share full: DEFER) it stays on
the share and the watcher stops offering until the next tick; for this frame alone (a writer still holds it:
BUSY; its claim failed: RETRY) only this candidate waits - another settle window, or a back-off that doubles
up to a minute - and the watcher goes on with the others. Frames wait on the share, not in memory.

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
from edge_inference.names import shown
from edge_inference.share import share_fs
from edge_inference.share.mounts import filesystem_type, needs_polling, settle_window
from edge_inference.vision.decode import IMAGE_EXTENSIONS
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".filepart", ".crdownload", ".partial", ".swp")


class Offer(enum.Enum):
    TAKEN = "taken"  # intake took it (or it was already done): forget the candidate
    DEFER = "defer"  # intake is full or paused: keep it on the share, offer again later
    DROP = "drop"  # nothing to do (already finished, gone, not inside the share): forget the candidate
    BUSY = "busy"  # its writer still holds it: this one waits another settle window
    RETRY = "retry"  # this one cannot be taken now (its claim failed): it backs off, the others go on


_FIRST_BACKOFF = 1.0  # seconds before a candidate whose offer failed is offered again; doubles each time
_MAX_BACKOFF = 60.0


TAKEN_EXTENSIONS = ", ".join(sorted(IMAGE_EXTENSIONS))  # as the "ignoring" line and the README show them


def is_temp_name(name: str) -> bool:
    """A hidden or temporary name (a writer's file in progress): ignored without a word."""
    return name.startswith((".", "~$")) or name.lower().endswith(_TEMP_SUFFIXES)


def is_frame_name(name: str) -> bool:
    """An image file name that is not hidden or temporary."""
    return not is_temp_name(name) and os.path.splitext(name.lower())[1] in IMAGE_EXTENSIONS


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
    not_before: float = 0.0  # monotonic time before which it is not offered again (its back-off)
    backoff: float = 0.0


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
        self.settle, self.trust_mtime = settle_window(input_dir, settle_seconds)
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.exclude_dirs = exclude_dirs
        self._on_sweep = on_sweep
        self._lock = threading.Lock()
        self._candidates: dict[str, _Candidate] = {}
        self._observer: BaseObserver | None = None
        self._warned: set[str] = set()
        self.running = False
        tick = max(0.02, min(0.1, self.settle / 3 if self.settle else 0.05))
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
        log.info(
            "watching %s (%s mode, settle %.2fs%s)",
            self.input_dir,
            self.mode,
            self.settle,
            "" if self.trust_mtime else ", past the mount's attribute cache; mtimes not trusted",
        )

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
            self._never_taken(path, parts[-1])
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
                if not is_frame_name(name):
                    self._never_taken(os.path.join(dirpath, name), name)
                elif self.note(os.path.join(dirpath, name), source="scan"):
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
            if cand.not_before > now:
                continue
            st = self._ready(path, cand, now, wall)
            if st is None:
                continue
            rel = self.relative(path)
            if rel is None:
                self._forget(path)
                continue
            try:
                verdict = self._offer(rel, st, cand.source)
            except Exception:  # one frame's failure never stops the watcher: it backs off, the others go on
                self._warn_once(path, "offering %s failed (backing off)", rel, exc_info=True)
                verdict = Offer.RETRY
            if verdict is Offer.DEFER:
                return  # intake is full: stop offering until the next tick
            if verdict is Offer.BUSY:
                cand.changed_at, cand.complete = time.monotonic(), False
            elif verdict is Offer.RETRY:
                cand.backoff = min(_MAX_BACKOFF, cand.backoff * 2 if cand.backoff else _FIRST_BACKOFF)
                cand.not_before = time.monotonic() + cand.backoff
            else:
                self._forget(path)

    def _ready(self, path: str, cand: _Candidate, now: float, wall: float) -> os.stat_result | None:
        """The stat of a candidate that is complete now, else None (gone candidates are forgotten)."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            self._forget(path)
            return None
        except OSError as exc:  # a passing share error: the candidate stays
            self._warn_once(path, "cannot stat %s: %s (the share may be away)", path, exc.strerror)
            return None
        signature = (st.st_size, st.st_mtime_ns)
        if cand.signature is None:
            cand.signature = signature
            if self.trust_mtime:  # first look on a local file system: a file untouched for the window is ready
                cand.changed_at = now - min(max(0.0, wall - st.st_mtime), self.settle)
        elif signature != cand.signature:
            cand.signature, cand.changed_at, cand.complete = signature, now, False
            return None
        if not stat.S_ISREG(st.st_mode):
            return st  # a FIFO, device or symlink: intake refuses it without opening it
        if not (cand.complete or now - cand.changed_at >= self.settle):
            return None
        if st.st_size == 0 and not cand.complete and now - cand.changed_at < max(self.settle, 2.0):
            return None  # an empty file is often a writer that has not written yet: give it longer
        try:
            fresh = share_fs.revalidate(Path(path))
        except FileNotFoundError:
            self._forget(path)
            return None
        except OSError as exc:
            if share_fs.is_busy(exc):  # a writer holds it with a deny share mode: not finished
                cand.changed_at, cand.complete = now, False
            else:
                self._warn_once(path, "cannot open %s: %s (the share may be away)", path, exc.strerror)
            return None
        if (fresh.st_size, fresh.st_mtime_ns) != signature:  # the cached attributes were behind
            cand.signature, cand.changed_at, cand.complete = (fresh.st_size, fresh.st_mtime_ns), now, False
            return None
        return fresh

    def _never_taken(self, path: str, name: str) -> None:
        """A file that is no frame and no temp file (notes.txt, a .raw frame): said once, left where it is."""
        if not is_temp_name(name):
            rel = os.path.relpath(path, self.input_dir)
            self._warn_once(
                path, "ignoring %s: not an image file name (frames end in %s)", shown(rel), TAKEN_EXTENSIONS
            )

    def _forget(self, path: str) -> None:
        with self._lock:
            self._candidates.pop(path, None)

    def _warn_once(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        if key not in self._warned:
            if len(self._warned) > 10_000:  # bounded: a share of ever-new bad names must not grow it forever
                self._warned.clear()
            self._warned.add(key)
            log.warning(msg, *args, exc_info=exc_info)


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
