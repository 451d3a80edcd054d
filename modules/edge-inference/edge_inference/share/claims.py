"""Claiming frames on the shared input share, and what happens to the original once it is done.

With `INPUT_DISPOSITION=archive|delete` a frame is claimed by an atomic rename into this replica's claim
area inside the share (`<INPUT_DIR>/.edge-inference/claims/<replica>/<rel path>`): rename is atomic on
local, NFS and SMB file systems, so of two replicas racing for one frame exactly one wins, and a crash
leaves the frame in the claim area, where the restart finds it again. With `keep` (a read-only share) the
frame is not moved and the ledger alone remembers it (single replica).

A replica whose heartbeat file is older than `CLAIM_STALE_SECONDS` is presumed gone; its claims are moved
into ours one file at a time (each rename atomic, so two adopters never take the same file).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from edge_inference.share.tempfiles import discard, temp_path

log = logging.getLogger(__name__)

STATE_FOLDER = ".edge-inference"
HEARTBEAT = ".heartbeat"


def safe_join(root: Path, rel_path: str) -> Path:
    """`root / rel_path`, refusing anything that would leave `root` (absolute, `..`, NUL)."""
    if not rel_path or "\0" in rel_path or rel_path.startswith("/") or "\\" in rel_path:
        raise ValueError(f"invalid relative path {rel_path!r}")
    parts = rel_path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"relative path {rel_path!r} escapes the share")
    try:
        os.fsencode(rel_path)
    except UnicodeEncodeError:
        raise ValueError(f"relative path {rel_path!r} is not a file-system name") from None
    return root.joinpath(*parts)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` through a temp name in the same folder: `dst` is never seen half-written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        discard(tmp)
        raise


def move(src: Path, dst: Path) -> None:
    """Rename when on one file system, else copy atomically then remove the source."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_atomic(src, dst)
        src.unlink()


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

    @property
    def moves_files(self) -> bool:
        return self.disposition in ("archive", "delete")

    def prepare(self) -> None:
        if self.moves_files:
            self.own.mkdir(parents=True, exist_ok=True)
            self.heartbeat()

    def heartbeat(self) -> None:
        if self.moves_files:
            with contextlib.suppress(OSError):
                (self.own / HEARTBEAT).touch()

    def claim(self, rel_path: str) -> Path | None:
        """Take the frame: its path now (inside the claim area when files move), or None if gone."""
        source = safe_join(self.input_dir, rel_path)
        if not self.moves_files:
            return source
        target = safe_join(self.own, rel_path)
        return target if self._move_in(source, target) else None  # atomic: of two replicas exactly one wins

    def _move_in(self, source: Path, target: Path) -> bool:
        """Rename `source` to `target` in our claim area, making its folder first; False when `source` is gone.
        The lock keeps the pruning of emptied folders (after a disposition, on another thread) from removing
        the folder between its making and the rename."""
        with self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(source, target)
            except FileNotFoundError:
                return False
        return True

    def claimed(self) -> Iterator[tuple[str, Path]]:
        """(rel path, path) of every file in our claim area: frames a crash left unfinished.

        Raises OSError when the claim area cannot be read (the input share is away): an empty answer would
        tell the caller there is nothing left to finish, and frames would wait there until the next restart."""
        if not self.moves_files:
            return
        if not self.own.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, "the claim area is not there (is the input share away?)", str(self.own)
            )

        def fail(exc: OSError) -> None:
            raise exc

        for dirpath, _dirs, files in os.walk(self.own, onerror=fail):
            for name in files:
                if name == HEARTBEAT or name.startswith("."):
                    continue
                path = Path(dirpath) / name
                yield path.relative_to(self.own).as_posix(), path

    def adopt_stale(self) -> int:
        """Move the claims of replicas silent for `stale_seconds` into ours; returns how many files."""
        if not self.moves_files or not self.claims_root.is_dir():
            return 0
        total, now = 0, time.time()
        for other in self.claims_root.iterdir():
            adopted = 0
            if other.name == self.replica_id or not other.is_dir():
                continue
            try:
                beat = (other / HEARTBEAT).stat().st_mtime
            except FileNotFoundError:
                beat = other.stat().st_mtime
            if now - beat < self.stale_seconds:
                continue
            for dirpath, _dirs, files in os.walk(other):
                for name in files:
                    if name == HEARTBEAT:
                        continue
                    src = Path(dirpath) / name
                    if self._move_in(src, self.own / src.relative_to(other)):
                        adopted += 1
            if adopted:
                log.warning("adopted %d claimed frames of silent replica %s", adopted, other.name)
            total += adopted
        return total

    def unclaim(self, rel_path: str, path: Path) -> None:
        """Put a claimed frame back where it was (used when shutting down before it was processed)."""
        if self.moves_files and path != safe_join(self.input_dir, rel_path):
            with contextlib.suppress(OSError):
                os.rename(path, safe_join(self.input_dir, rel_path))

    def dispose(self, rel_path: str, path: Path, ok: bool) -> None:
        """After the result is written: archive or delete the original (failed ones go to failed/)."""
        failed_target = safe_join(self.output_dir / "failed", rel_path)
        if not ok:
            if self.moves_files:
                move(path, failed_target)
            else:
                copy_atomic(path, failed_target)
            return
        if self.disposition == "archive":
            move(path, safe_join(self.output_dir / "processed", rel_path))
        elif self.disposition == "delete":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, folder: Path) -> None:
        """Remove claim sub-folders left empty (never the claim root or the share's own folders)."""
        if not self.moves_files:
            return
        with self._folders:
            while folder != self.own and self.own in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    return
                folder = folder.parent
