"""The input-share watcher: finds complete frames and hands them to intake.

Every source notes paths into one bounded candidate table (share/candidates.py: settling, offering, intake's
verdicts): inotify (watchdog's observer, events mode: local file systems); the module's own poller (poll mode:
cifs/smb/nfs/fuse mounts, where inotify never sees other machines' writes); the full sweep at start and every
RESCAN_INTERVAL_SECONDS; and single paths named by ASE file events or `reprocess`. A poll lists only the folders
that changed, and what the watcher has dealt with is kept out of every listing (share/scanner.py,
share/folder_index.py), so an idle share costs what its folders cost, not its files. The table holds at most
MAX_CANDIDATES paths: a backlog of a million frames streams through it, while the scan remembers which folders
hold frames it had no room for (`frames_left` is the backlog the progress report shows). Temp and hidden names
are ignored (`is_frame_name`, `_wanted`: the one name check of every source); any other name without an image
extension is named once in a WARNING line and left where it is; symlinks are never followed.
Frames wait on the share, not in memory.

Threads (`workers.py`): `watcher-settle` offers candidates once complete and checks that the observer is still
alive (a dead observer kills the worker, so the module stops and IoT Edge restarts it); `watcher-scan` sweeps at
start, then polls every POLL_INTERVAL_SECONDS (poll mode; in events mode it only refills the table) and sweeps
every RESCAN_INTERVAL_SECONDS (ten times less often while a backlog waits for room in the table).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from edge_inference.errors import WorkerDied
from edge_inference.log import WarnOnce
from edge_inference.names import shown
from edge_inference.share.candidates import CandidateTable, FrameOffer
from edge_inference.share.candidates import Offer as Offer  # intake's verdicts, re-exported where they are used
from edge_inference.share.folder_index import FolderIndex
from edge_inference.share.mounts import filesystem_type, needs_polling, settle_window
from edge_inference.share.scanner import Finished, ShareScanner, SweepReport
from edge_inference.vision.decode import IMAGE_EXTENSIONS
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".filepart", ".crdownload", ".partial", ".swp")
MAX_CANDIDATES = 10_000  # paths held at once; more frames wait on the share, counted, until there is room
BACKLOG_SWEEP_FACTOR = 10  # while a sweep's frames wait for room, the next sweep comes this many times later


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


class FrameWatcher:
    """Watches INPUT_DIR recursively and offers complete frames to `offer(rel_path, stat, source)`.

    `keeps`: frames stay on the share once done (INPUT_DISPOSITION=keep), so what was dealt with is remembered;
    `finished(items)` names the (rel path, stat) versions the ledger already finished (keep mode, at a restart)."""

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
        keeps: bool = False,
        finished: Finished | None = None,
        max_candidates: int = MAX_CANDIDATES,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.input_dir = input_dir
        self._offer = offer
        self.mode = resolve_mode(input_dir, mode)
        self.settle, self.trust_mtime = settle_window(input_dir, settle_seconds)
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.exclude_dirs = exclude_dirs
        self.keeps = keeps
        self.max_candidates = max_candidates
        self._observer: BaseObserver | None = None
        self._warn_once = WarnOnce(log)
        self.index = FolderIndex(str(input_dir))
        self.candidates = CandidateTable(
            self.index, self.settle, self.trust_mtime, max_candidates, keeps=keeps, warn=self._warn_once
        )
        self.scanner = ShareScanner(
            input_dir,
            self.index,
            self,
            keeps=keeps,
            finished=finished or (lambda items: set()),
            exclude_dirs=exclude_dirs,
        )
        self.last_sweep: SweepReport | None = None
        self.swept = threading.Event()  # set once the start-up sweep has listed the whole share
        self._unseen = 0  # frames the last sweep counted that the table had no room for (minus those taken since)
        self._next_sweep = 0.0
        self.running = False
        tick = max(0.02, min(0.1, self.settle / 3 if self.settle else 0.05))
        self._settler = PeriodicWorker("watcher-settle", tick, supervisor, tick=self._settle_tick, daemon=True)
        self._scanning = PeriodicWorker(
            "watcher-scan", poll_interval, supervisor, tick=self._scan_tick, first_tick_at_start=True, daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.input_dir.mkdir(parents=True, exist_ok=True)
        if self.mode != "poll":
            observer: BaseObserver = Observer(timeout=0.2)
            observer.schedule(_EventHandler(self), str(self.input_dir), recursive=True)
            observer.daemon = True
            observer.start()
            self._observer = observer
        self.running = True
        self._settler.start()
        self._scanning.start()  # its first tick is the start-up sweep: the backlog streams in from there
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
        self._scanning.request_stop()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        self._settler.join(timeout)
        self._scanning.join(timeout)

    def alive(self) -> bool:
        return self.running and self._observer_alive() and self._settler.is_alive() and self._scanning.is_alive()

    @property
    def error(self) -> BaseException | None:
        """Why the watcher died (one of its workers), or None."""
        return self._settler.error or self._scanning.error

    def _observer_alive(self) -> bool:
        return self.mode == "poll" or (self._observer is not None and self._observer.is_alive())

    # -- candidates -----------------------------------------------------------------------------------------
    def note(self, path: str, *, complete: bool = False, source: str = "events", force: bool = False) -> bool:
        """Remember a possible frame. True when it was not a candidate yet. With the table full it waits on the
        share (its folder is listed again once there is room) unless `force` (a frame asked for by name)."""
        rel = self.relative(path)
        if rel is None:
            return False
        return self._add(path, rel, complete=complete, source=source, force=force)

    def _add(self, path: str, rel: str, *, complete: bool, source: str, force: bool) -> bool:
        added = self.candidates.add(path, rel, complete=complete, source=source, force=force)
        if complete:
            self._settler.wake()
        return added

    def relative(self, path: str) -> str | None:
        """The POSIX relative path of a frame inside the share, or None for anything to ignore."""
        rel = os.path.relpath(path, self.input_dir)
        if rel.startswith("..") or os.path.isabs(rel):
            return None
        return "/".join(rel.split(os.sep)) if self._wanted(rel.split(os.sep)) else None

    def _wanted(self, parts: list[str]) -> bool:
        """Whether a file at these path parts is a frame to take (not in a hidden or excluded folder, a frame name,
        no backslash). The one name check of every source: events, polls, sweeps and single paths."""
        if parts[0] in self.exclude_dirs or any(p.startswith(".") for p in parts[:-1]):
            return False
        if not is_frame_name(parts[-1]):
            self._never_taken("/".join(parts), parts[-1])
            return False
        if any("\\" in p for p in parts):
            # legal on Linux, but safe_join() refuses it: offering it would kill the watcher (a crash loop)
            rel = "/".join(parts)  # one warning per name, whichever source met it first
            self._warn_once(rel, "ignoring %r: a backslash in a share path is not supported", rel)
            return False
        return True

    # the scanner's view of the table (share/scanner.py `Candidates`)
    def room(self) -> int:
        return self.candidates.room()

    def capacity(self) -> int:
        return self.max_candidates

    def has(self, rel_path: str) -> bool:
        return os.path.join(self.input_dir, rel_path) in self.candidates

    def wanted(self, rel_path: str) -> bool:
        return self._wanted(rel_path.split("/"))

    def add(self, rel_path: str, source: str) -> bool:
        added = self._add(os.path.join(self.input_dir, rel_path), rel_path, complete=False, source=source, force=False)
        if added and source == "scan":  # a frame the last sweep counted as waiting for room
            self._unseen = max(0, self._unseen - 1)
        return added

    @property
    def pending(self) -> int:
        return len(self.candidates)

    @property
    def frames_left(self) -> int:
        """Frames on the share not yet offered: the candidates, and those the last sweep had no room for."""
        return self.pending + self._unseen

    def sweep(self) -> SweepReport:
        """Walk the whole share (the backstop of the polls and events); returns what it found."""
        report = self.scanner.sweep(lambda: self._scanning.stopping)
        self._unseen = report.unseen
        self.last_sweep = report
        if report.complete:
            self.swept.set()
        if report.noted or report.unseen:
            log.info(
                "sweep: %d folders in %.1f s, %d new frames taken in, %d more wait for room",
                report.folders,
                report.seconds,
                report.noted,
                report.unseen,
            )
        return report

    def _scan_tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            report = self.sweep()
            interval = self.rescan_interval if self.rescan_interval > 0 else float("inf")
            # a backlog that waits for room is listed folder by folder as room frees up (the polls' refills):
            # sweeping the whole share again meanwhile would only count it once more
            self._next_sweep = now + interval * (BACKLOG_SWEEP_FACTOR if report.unseen else 1)
        else:
            self.scanner.poll(relist_changed=self.mode == "poll")

    # -- settling and offering ------------------------------------------------------------------------------
    def _settle_tick(self) -> None:
        if self.running and not self._observer_alive():
            raise WorkerDied("the file-system observer thread of the input watcher died")
        self.candidates.settle_once(self._offer, lambda: self._settler.stopping)

    def _never_taken(self, rel: str, name: str) -> None:
        """A file that is no frame and no temp file (notes.txt, a .raw frame): said once, left where it is."""
        if not is_temp_name(name):
            self._warn_once(rel, "ignoring %s: not an image file name (frames end in %s)", shown(rel), TAKEN_EXTENSIONS)


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
