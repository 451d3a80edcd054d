"""Listing the input share for the watcher: a poll that costs what changed, and the full sweep behind it.

    poll     every POLL_INTERVAL_SECONDS (poll mode): one stat per known folder; a folder is listed again only
             when its mtime changed (a frame was added, removed or renamed there), while it is "hot" (changed
             within the last few seconds: a second change inside the mtime's granularity leaves the mtime as
             it was), when its mtime was caught lying (frames appeared without it changing), or when it holds
             frames the candidate table had no room for. An idle share of 100,000 kept frames in 1,000 folders
             costs 1,000 stats a second, not 100,000.
    sweep    every RESCAN_INTERVAL_SECONDS, and at start: every folder listed, new folders found; in keep mode
             each known frame's (size, mtime) is checked too (a frame rewritten in place is new again). It is
             the backstop for what a poll cannot see: folder mtimes that a client caches (NFS `acdirmin` ..
             `acdirmax`, 30..60 s by default; cifs `acdirmax`, 1 s), or that a file system does not keep
             (object-store FUSE mounts).

A listing only looks closer at names it does not know (folder_index.py): a known frame costs a hash, no stat.
New frame files become candidates of the watcher while its table has room; the rest are counted (`unseen`,
the backlog estimate of the progress report) and their folder is marked to be listed again once there is
room. So a million-frame backlog is never held in memory: the sweep streams it through a bounded table.
In keep mode a new file the ledger has already finished (a restart) is remembered, never offered; while the table
is full such files are only counted, so after a restart the backlog estimate is high until the refills reach them.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_inference.log import WarnOnce
from edge_inference.share.folder_index import PENDING, Folder, FolderIndex, name_hash, signature_hash

log = logging.getLogger(__name__)

HOT_SECONDS = 3.0  # a folder is listed at every poll for this long after its mtime changed (granularity + cache)
REFILL_AT = 0.25  # folders with frames waiting for room are listed again once this share of the table is free


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ScanSink(Protocol):
    """The watcher's candidate table, as the scanner feeds it."""

    def room(self) -> int: ...

    def capacity(self) -> int: ...

    def has(self, rel_path: str) -> bool: ...

    def add(self, rel_path: str, source: str) -> bool: ...

    def wanted(self, rel_path: str) -> bool: ...


Finished = Callable[[list[tuple[str, os.stat_result]]], set[str]]


@dataclass
class Listing:
    """What one folder listing found."""

    noted: int = 0  # new frames made candidates
    appeared: int = 0  # of them, names the folder did not hold at its last listing (not rewritten versions)
    unseen: int = 0  # new frames left for later (no room)
    children: tuple[str, ...] = ()  # its sub-folders (relative paths)


@dataclass
class SweepReport:
    folders: int = 0
    noted: int = 0
    unseen: int = 0
    seconds: float = 0.0
    complete: bool = False  # every folder was listed (not cut short by a share that went away, or a stop)


class ShareScanner:
    """Polls and sweeps the input share into the watcher's candidates (one thread: the watcher's scan worker)."""

    def __init__(
        self,
        root: Path,
        index: FolderIndex,
        candidates: ScanSink,
        *,
        keeps: bool,
        finished: Finished,
        exclude_dirs: tuple[str, ...],
        hot_seconds: float = HOT_SECONDS,
    ) -> None:
        self.root = str(root)
        self.index = index
        self.candidates = candidates
        self.keeps = keeps
        self.finished = finished
        self.exclude_dirs = exclude_dirs
        self.hot_seconds = hot_seconds
        self._warn_once = WarnOnce(log)
        self._away = False  # the last folder read failed with a share error

    # -- poll ---------------------------------------------------------------------------------------------------
    def poll(self, *, relist_changed: bool = True) -> int:
        """One poll: returns how many new frames became candidates. Without `relist_changed` (events mode, where
        inotify reports changes) only folders holding frames that waited for room are listed."""
        now = time.monotonic()
        refill = self.candidates.room() >= self.candidates.capacity() * REFILL_AT
        noted = 0
        stack = [f for f in self.index.folders() if relist_changed or (refill and f.incomplete)]
        while stack:
            folder = stack.pop()
            st = self._stat_folder(folder)
            if st is None:
                if self._away:
                    return noted  # the share does not answer: the next poll tries again
                continue
            changed = st.st_mtime_ns != folder.mtime_ns
            # a folder of frames waiting for room is listed only while there is room left for them: listing the
            # rest of a million-frame backlog would only count it again (the sweep's estimate stands)
            waiting = refill and folder.incomplete and self.candidates.room() > 0
            if not (waiting or (relist_changed and (changed or folder.mtime_lies or now < folder.hot_until))):
                continue
            source = "scan" if waiting and not changed else "poll"  # a refill: frames a sweep counted
            listing = self.list_folder(folder, st, source, check_versions=False)
            noted += listing.noted
            for child in listing.children:  # a new folder is listed at once, not a poll later
                entry = self.index.folder(child)
                if entry.mtime_ns == -1:
                    stack.append(entry)
        self._answered()
        return noted

    # -- sweep --------------------------------------------------------------------------------------------------
    def sweep(self, stopping: Callable[[], bool] = lambda: False) -> SweepReport:
        """List every folder from the share's root; returns what it found (`unseen`: the backlog left)."""
        t0 = time.monotonic()
        report = SweepReport()
        stack = [self.index.folder("")]
        while stack and not stopping():
            folder = stack.pop()
            st = self._stat_folder(folder)
            if st is None:
                if self._away:
                    break  # the share does not answer: the next sweep tries again
                continue
            listing = self.list_folder(folder, st, "scan", check_versions=self.keeps)
            report.folders += 1
            report.noted += listing.noted
            report.unseen += listing.unseen
            stack.extend(self.index.folder(child) for child in sorted(listing.children, reverse=True))
        report.seconds = time.monotonic() - t0
        report.complete = not stack
        if report.complete:
            self._answered()
        return report

    # -- one folder ---------------------------------------------------------------------------------------------
    def list_folder(self, folder: Folder, st: os.stat_result, source: str, *, check_versions: bool) -> Listing:
        """List one folder: note its new frames (room permitting), remember what the ledger finished, follow its
        sub-folders. `check_versions` (keep mode's sweep) treats a known frame whose size or mtime changed as new."""
        dirs: list[str] = []
        files: list[os.DirEntry[str]] = []
        try:  # listed through a folder fd (never through a symlink); entries are then stat'ed relative to it
            fd = os.open(folder.path, _DIR_FLAGS)
        except OSError as exc:  # gone meanwhile, or the share is away: try again later
            self._cannot_read(folder, exc)
            return Listing()
        try:
            return self._list_fd(folder, fd, st, source, check_versions, dirs, files)
        finally:
            os.close(fd)

    def _list_fd(
        self,
        folder: Folder,
        fd: int,
        st: os.stat_result,
        source: str,
        check_versions: bool,
        dirs: list[str],
        files: list[os.DirEntry[str]],
    ) -> Listing:
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if not entry.name.startswith(".") and (folder.rel or entry.name not in self.exclude_dirs):
                            dirs.append(entry.name)
                    else:
                        files.append(entry)
        except OSError as exc:
            self._cannot_read(folder, exc)
            return Listing()
        hashes = np.fromiter((name_hash(e.name) for e in files), dtype=np.int64, count=len(files))
        with self.index.lock:
            known = folder.lookup(hashes)
        new = [files[i] for i in np.flatnonzero(known == 0).tolist()]
        rewritten = [e for e, changed in self._changed(files, known) if changed] if check_versions else []
        listing = self._note(folder, new, source)
        if rewritten:
            listing.noted += self._note(folder, rewritten, source).noted
        self._watch_mtime(folder, st, listing)
        self._follow(folder, dirs)
        with self.index.lock:
            if folder.added or folder.removed or st.st_mtime_ns != folder.mtime_ns:
                folder.merge(hashes)  # an unchanged folder lost no name: nothing to fold in
            if st.st_mtime_ns != folder.mtime_ns:
                folder.hot_until = time.monotonic() + self.hot_seconds
            folder.mtime_ns = st.st_mtime_ns
            folder.incomplete = listing.unseen > 0
        prefix = f"{folder.rel}/" if folder.rel else ""
        listing.children = tuple(prefix + d for d in dirs)
        return listing

    def _changed(self, files: list[os.DirEntry[str]], known: np.ndarray) -> list[tuple[os.DirEntry[str], bool]]:
        """Known frames whose (size, mtime) differs from the version dealt with: (entry, changed)."""
        out = []
        for i in np.flatnonzero(known != 0).tolist():
            try:
                st = files[i].stat(follow_symlinks=False)
            except OSError:
                continue
            out.append((files[i], int(known[i]) != PENDING and signature_hash(st.st_size, st.st_mtime_ns) != known[i]))
        return out

    def _note(self, folder: Folder, new: list[os.DirEntry[str]], source: str) -> Listing:
        prefix = f"{folder.rel}/" if folder.rel else ""
        wanted = [(prefix + e.name, e) for e in new if self.candidates.wanted(prefix + e.name)]
        room = self.candidates.room()
        if room <= 0:  # a full table: only counted (the folder is listed again when there is room, and looked at then)
            return Listing(unseen=len(wanted))
        wanted = [(rel, e) for rel, e in wanted if not self.candidates.has(rel)]
        if self.keeps and wanted:
            wanted = self._drop_finished(wanted)
        listing = Listing()
        for rel, _entry in wanted:
            if room <= 0:
                listing.unseen += 1
            elif self.candidates.add(rel, source):
                listing.noted += 1
                room -= 1
        listing.appeared = listing.noted
        return listing

    def _watch_mtime(self, folder: Folder, st: os.stat_result, listing: Listing) -> None:
        """Frames that appeared in a folder listed whole before, its mtime the same as then: this file system does
        not keep folder mtimes (an object-store FUSE mount), so that folder is listed at every poll from now on."""
        quiet = time.monotonic() >= folder.hot_until and not folder.incomplete and not folder.mtime_lies
        if listing.appeared and quiet and st.st_mtime_ns == folder.mtime_ns:
            folder.mtime_lies = True
            log.warning(
                "%s: new frames appeared without its mtime changing (the file system does not keep folder mtimes):"
                " listed at every poll from now on",
                folder.rel or "the input share's root",
            )

    def _drop_finished(self, wanted: list[tuple[str, os.DirEntry[str]]]) -> list[tuple[str, os.DirEntry[str]]]:
        """Keep mode: new files the ledger already finished (found again after a restart) are remembered, not
        noted; their versions come from one stat each and one ledger query per folder."""
        stats: dict[str, os.stat_result] = {}
        for rel, entry in wanted:
            try:
                stats[rel] = entry.stat(follow_symlinks=False)
            except OSError:
                continue
        done = self.finished(list(stats.items())) if stats else set()
        for rel in done:
            self.index.remember(rel, stats[rel].st_size, stats[rel].st_mtime_ns)
        return [(rel, e) for rel, e in wanted if rel not in done]

    def _follow(self, folder: Folder, dirs: list[str]) -> None:
        """Sub-folders that appeared are indexed (listed next); those that went are forgotten with their tree."""
        prefix = f"{folder.rel}/" if folder.rel else ""
        with self.index.lock:
            known_dirs = set(folder.subdirs)
        for gone in known_dirs - set(dirs):
            self.index.drop(prefix + gone)
        for name in dirs:
            if name not in known_dirs:
                self.index.folder(prefix + name)

    def _stat_folder(self, folder: Folder) -> os.stat_result | None:
        try:
            st = os.lstat(folder.path)
        except OSError as exc:
            self._cannot_read(folder, exc)
            return None
        if not stat.S_ISDIR(st.st_mode):
            if folder.rel:
                self.index.drop(folder.rel)
            return None
        return st

    def _cannot_read(self, folder: Folder, exc: OSError) -> None:
        """A folder that is gone is forgotten; one the module may not read is warned about once; any other error
        means the share does not answer (`_away`: the round ends, one warning until the share answers again)."""
        if isinstance(exc, FileNotFoundError | NotADirectoryError):
            if folder.rel:
                self.index.drop(folder.rel)
        elif isinstance(exc, PermissionError) or exc.errno == errno.ELOOP:
            self._warn_once(folder.rel, "cannot list %s: %s (its frames are not taken)", folder.path, exc.strerror)
        else:
            self._away = True
            self._warn_once("", "the input share does not answer (%s): listed again at the next poll", exc.strerror)

    def _answered(self) -> None:
        self._away = False
        self._warn_once.again("")
