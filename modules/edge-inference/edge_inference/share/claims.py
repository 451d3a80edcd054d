"""Claiming frames on the shared input share, and what happens to the original once it is done.

With `INPUT_DISPOSITION=archive|delete` a frame is claimed by an atomic rename into this replica's claim
area inside the share (`<INPUT_DIR>/.edge-inference/claims/<replica>/<rel path>`): rename is atomic on
local, NFS and SMB file systems, so of two replicas racing for one frame exactly one wins, and a crash
leaves the frame in the claim area, where the restart finds it again. With `keep` (a read-only share) the
frame is not moved and the ledger alone remembers it (single replica).

A replica whose heartbeat file is older than `CLAIM_STALE_SECONDS` is presumed gone; its claims are moved
into ours one file at a time (each rename atomic, so two adopters never take the same file). Only a real
folder of the share is adopted, and only the regular files in it: a symlink or a mount in the claim area is
left alone (it would move files from outside the share).

Every operation here goes through `share_fs`: folders are walked without following a symlink, so neither a
link planted on the share nor a folder swapped for one mid-claim moves or copies a file from outside it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edge_inference.names import shown
from edge_inference.share import output_layout as layout
from edge_inference.share import share_fs, tempfiles

log = logging.getLogger(__name__)

STATE_FOLDER = ".edge-inference"
HEARTBEAT = ".heartbeat"
BUSY_WARN_AFTER = 120.0  # seconds a claim may be refused as busy (a writer holds the frame) before a warning
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def safe_join(root: Path, rel_path: str) -> Path:
    """`root / rel_path`, refusing anything that would leave `root` (absolute, `..`, NUL)."""
    return root.joinpath(*share_fs.split(rel_path))


class ClaimArea:
    """This replica's claims on the input share, and the disposition of finished originals."""

    def __init__(
        self, input_dir: Path, output_dir: Path, replica_id: str, disposition: str, stale_seconds: float
    ) -> None:
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.disposition = disposition
        self.stale_seconds = stale_seconds
        self.replica_id = replica_id
        self.claims_root = input_dir / STATE_FOLDER / "claims"
        self.own = self.claims_root / replica_id
        self._folders = threading.Lock()  # claim-area folders: made by claims, removed once emptied
        self._warned: set[str] = set()
        self._swept: set[str] = set()  # silent replicas whose temp files were removed (once each)

    @property
    def moves_files(self) -> bool:
        return self.disposition in ("archive", "delete")

    @property
    def _own_parts(self) -> list[str]:
        return [STATE_FOLDER, "claims", self.replica_id]

    def prepare(self) -> None:
        if self.moves_files:
            self.input_dir.mkdir(parents=True, exist_ok=True)  # INPUT_DIR itself, as the watcher makes it
            os.close(share_fs.open_dir(self.input_dir, self._own_parts, create=True))
            self.heartbeat()

    def heartbeat(self) -> None:
        if not self.moves_files:
            return
        with contextlib.suppress(OSError):
            fd = share_fs.open_dir(self.input_dir, self._own_parts)
            try:
                beat = os.open(HEARTBEAT, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
                try:
                    os.utime(beat)
                finally:
                    os.close(beat)
            finally:
                os.close(fd)

    def location(self, rel_path: str) -> tuple[Path, str]:
        """(root, rel path) where a claimed frame is now: in our claim area when files move, else in place."""
        return (self.own if self.moves_files else self.input_dir), rel_path

    def readable(self, rel_path: str) -> contextlib.AbstractContextManager[Path]:
        """A path to read a claimed frame through the folders checked on the way (`share_fs.readable_path`)."""
        return share_fs.readable_path(*self.location(rel_path))

    def claim(self, rel_path: str) -> Path | None:
        """Take the frame: its path now (inside the claim area when files move), or None if gone.

        Raises `share_fs.OutsideShare` when a folder on its path is a symlink (never taken), an OSError with
        `share_fs.is_busy` when its writer still holds it (SMB share mode), and other OSErrors when the claim
        cannot be made now (the share is away, the claim path is too long or clashes): the frame stays."""
        if not self.moves_files:
            share_fs.lstat(self.input_dir, rel_path)  # its folders are the share's own, not links out of it
            return safe_join(self.input_dir, rel_path)
        parts = share_fs.split(rel_path)
        with self._folders:  # the pruning of emptied folders never removes one between its making and the rename
            try:
                sfd = share_fs.open_dir(self.input_dir, parts[:-1])
            except FileNotFoundError:
                return None  # its folder is gone with it
            try:
                with share_fs.parent(self.own, rel_path, create=True) as (dfd, name):
                    try:
                        os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=dfd)  # of two replicas exactly one wins
                    except FileNotFoundError:
                        return None  # another replica took it, or the writer removed it
                    if not stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                        os.rename(name, name, src_dir_fd=dfd, dst_dir_fd=sfd)  # swapped for a link: put it back
                        return None
            finally:
                os.close(sfd)
        return safe_join(self.own, rel_path)

    def claimed(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        """(rel path, path, stat) of every regular file in our claim area: frames a crash left unfinished.

        Raises OSError when the claim area cannot be read (the input share is away): an empty answer would
        tell the caller there is nothing left to finish, and frames would wait there until the next restart."""
        if not self.moves_files:
            return
        try:
            fd = share_fs.open_dir(self.input_dir, self._own_parts)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, "the claim area is not there (is the input share away?)", str(self.own)
            ) from None
        try:
            for rel, st, _dfd, _name in _regular_files(fd, self._warn_once):
                yield rel, safe_join(self.own, rel), st
        finally:
            os.close(fd)

    def adopt_stale(self) -> int:
        """Move the claims of replicas silent for `stale_seconds` into ours; returns how many files."""
        if not self.moves_files:
            return 0
        try:
            root = share_fs.open_dir(self.input_dir, [STATE_FOLDER, "claims"])
        except (FileNotFoundError, NotADirectoryError):
            return 0
        total = 0
        try:
            device = os.fstat(root).st_dev
            for entry in os.scandir(root):
                if entry.name != self.replica_id:
                    total += self._adopt_from(root, entry.name, device)
        finally:
            os.close(root)
        return total

    def _adopt_from(self, root: int, name: str, device: int) -> int:
        try:
            other = os.open(name, _DIR_FLAGS, dir_fd=root)
        except FileNotFoundError:
            return 0
        except NotADirectoryError:
            self._warn_once(name, "claim area entry %s is not a folder of the share: left alone", shown(name))
            return 0
        adopted = 0
        try:
            st = os.fstat(other)
            if st.st_dev != device:
                self._warn_once(name, "claim area entry %s is on another file system: left alone", shown(name))
                return 0
            try:
                beat = os.stat(HEARTBEAT, dir_fd=other, follow_symlinks=False).st_mtime
            except FileNotFoundError:
                beat = st.st_mtime
            if time.time() - beat < self.stale_seconds:
                self._swept.discard(name)  # alive (again): sweep once more if it falls silent later
                return 0
            self._sweep_temps_of(name)
            for rel, fst, dfd, fname in _regular_files(other, self._warn_once):
                if fst.st_dev != device:
                    continue
                with self._folders, share_fs.parent(self.own, rel, create=True) as (tfd, tname):
                    try:
                        os.rename(fname, tname, src_dir_fd=dfd, dst_dir_fd=tfd)
                    except FileNotFoundError:
                        continue  # another adopter took it
                adopted += 1
        finally:
            os.close(other)
        if adopted:
            log.warning("adopted %d claimed frames of silent replica %s", adopted, shown(name))
        return adopted

    def _sweep_temps_of(self, name: str) -> None:
        """A silent replica was killed mid-write: its temp files in the output share go with its claims."""
        if name in self._swept:
            return
        self._swept.add(name)
        removed = tempfiles.remove_replicas(self.output_dir, name)
        if removed:
            log.warning("removed %d temp files of silent replica %s from the output share", removed, shown(name))

    def unclaim(self, rel_path: str) -> None:
        """Put a claimed frame back where it was (shutting down before it was processed); a newer frame of the
        same name waiting there is never overwritten (ours then stays claimed, resumed at the next start)."""
        if self.moves_files:
            with contextlib.suppress(OSError):
                share_fs.rename(self.own, rel_path, self.input_dir, rel_path, replace=False)

    def dispose(self, rel_path: str, ok: bool) -> None:
        """After the result is written: archive or delete the original (failed ones go to failed/)."""
        root, rel = self.location(rel_path)
        if not ok:
            if self.moves_files:
                share_fs.move(root, rel, self.output_dir, layout.failed_path(rel_path))
            else:
                share_fs.copy(root, rel, self.output_dir, layout.failed_path(rel_path))
        elif self.disposition == "archive":
            share_fs.move(root, rel, self.output_dir, layout.processed_path(rel_path))
        elif self.disposition == "delete":
            share_fs.remove(root, rel)
        self._prune_empty_dirs(rel_path)

    def _prune_empty_dirs(self, rel_path: str) -> None:
        """Remove claim sub-folders left empty (never the claim root or the share's own folders)."""
        folder = rel_path.rpartition("/")[0]
        if self.moves_files and folder:
            with self._folders:
                share_fs.prune_empty(self.own, folder)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)


def _regular_files(top: int, warn: Callable[..., None]) -> Iterator[tuple[str, os.stat_result, int, str]]:
    """(rel path, stat, folder fd, name) of the regular files under the folder `top`, walked without following
    symlinks (os.fwalk); anything else (a link, a FIFO) is skipped with one warning. Errors are raised."""

    def fail(exc: OSError) -> None:
        raise exc

    for dirpath, _dirs, files, dfd in os.fwalk(".", dir_fd=top, follow_symlinks=False, onerror=fail):
        for name in files:
            if name == HEARTBEAT or name.startswith("."):
                continue
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            rel = name if dirpath == "." else f"{dirpath[2:]}/{name}"
            if not stat.S_ISREG(st.st_mode):
                warn(rel, "claim area entry %s is not a regular file: left alone", shown(rel))
                continue
            yield rel, st, dfd, name


class ClaimRefusals:
    """What becomes of a frame whose claim failed, as the watcher's verdict (`Offer` values), logged once per frame:
    - "drop": never taken (a symlinked folder on its path: it is not in the share);
    - "busy": its writer still holds it (an SMB share mode): quiet, another settle window; a warning only if it
      stays so for BUSY_WARN_AFTER (then it is no writer but, say, a folder the module may not change);
    - "retry": anything else (the share away, a clash in the claim area): it backs off alone, the others go on."""

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._busy_since: dict[str, float] = {}

    def verdict(self, rel_path: str, exc: OSError) -> str:
        if isinstance(exc, share_fs.OutsideShare):
            self._warn_once(rel_path, "not taking %s: %s", shown(rel_path), exc.strerror)
            return "drop"
        if share_fs.is_busy(exc):
            since = self._busy_since.setdefault(rel_path, time.monotonic())
            if time.monotonic() - since < BUSY_WARN_AFTER:
                log.debug("%s is still held by its writer (%s): not ready yet", shown(rel_path), exc.strerror)
            else:
                self._warn_once(
                    rel_path, "cannot claim %s for %.0f s: %s", shown(rel_path), BUSY_WARN_AFTER, exc.strerror
                )
            return "busy"
        self._warn_once(
            rel_path, "cannot claim %s: %s (it waits; the other frames go on)", shown(rel_path), exc.strerror
        )
        return "retry"

    def taken(self, rel_path: str) -> None:
        self._busy_since.pop(rel_path, None)

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key in self._warned:
            log.debug(msg, *args)
            return
        if len(self._warned) > 10_000:  # bounded: a share of ever-new bad names must not grow them forever
            self._warned.clear()
            self._busy_since.clear()
        self._warned.add(key)
        log.warning(msg, *args)
