"""Whether the shares answer: the input share readable (with our claim area on it), the output share mounted
and writable with room to spare.

A share unmounted under the module leaves its mount point behind as a plain folder: results written there would
be hidden when the share returns, and an empty input folder says nothing about the frames on the share. So the
mount holding each share folder is remembered when the guard is built (`/` needs no watching), and a share
folder whose mount is gone is never used. With REQUIRE_MOUNTED_SHARES the module does not start at all on a
plain folder where a share was meant to be (`require_mounted_shares`). The pipeline asks the guard before it writes, when a frame cannot be
read, and on every housekeeping round.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from edge_inference.errors import ShareError
from edge_inference.share import share_fs
from edge_inference.share.claims import ClaimArea
from edge_inference.share.ledger import LedgerEntry
from edge_inference.share.mounts import is_mount_point, mount_point_of, share_mount_problem

log = logging.getLogger(__name__)

MIN_FREE_FLOOR_BYTES = 64 * 1024  # a share with less than this free is not writable, whatever MIN_FREE_MB says


class ShareGuard:
    """Mounted / readable / writable checks for the input and output shares."""

    def __init__(self, input_dir: Path, output_dir: Path, min_free_mb: float, claims: ClaimArea) -> None:
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.min_free_bytes = max(int(min_free_mb * 1024 * 1024), MIN_FREE_FLOOR_BYTES)
        self.claims = claims
        self._output_mount = share_mount(output_dir)
        self._input_mount = share_mount(input_dir)

    # -- output -----------------------------------------------------------------------------------------------
    def check_output_mounted(self) -> None:
        """Raise OSError(ENODEV) when the output share's mount is gone (its mount point is a plain folder)."""
        if mount_gone(self._output_mount):
            raise OSError(errno.ENODEV, "the output share is no longer mounted (its mount point is a plain folder)")

    def output_present(self) -> bool:
        """The output share is mounted and OUTPUT_DIR answers (whatever its free space): its files can be looked at."""
        return not mount_gone(self._output_mount) and readable_dir(self.output_dir)

    def output_writable(self) -> bool:
        """Mounted, OUTPUT_DIR there (made again when a share came back empty), and free space above the bound."""
        try:
            self.check_output_mounted()
            self.output_dir.mkdir(parents=True, exist_ok=True)  # as at start (a share that came back empty)
            usage = shutil.disk_usage(self.output_dir)
        except OSError:
            return False
        return usage.free >= self.min_free_bytes

    # -- input ------------------------------------------------------------------------------------------------
    def input_readable(self) -> bool:
        return readable_dir(self.input_dir)

    def input_available(self) -> bool:
        """INPUT_DIR answers on its own mount, and our claim area is there (made again if someone removed it)."""
        if not readable_dir(self.input_dir) or mount_gone(self._input_mount):
            return False
        if not self.claims.moves_files or readable_dir(self.claims.own):
            return True
        try:  # the share answers, but our claim area is gone (someone removed `.edge-inference`): make it again
            self.claims.prepare()
        except OSError:
            return False
        log.warning("the claim area %s was missing on the input share: made again", self.claims.own)
        return True

    def frame_vanished(self, rel_path: str) -> bool:
        """A claimed file that cannot be read: did the share go away (rather than the frame being bad)?"""
        try:
            share_fs.lstat(*self.claims.location(rel_path))
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            return True  # the share answers with an error (EIO, ESTALE...): not the frame's fault
        else:
            return False
        if self.claims.moves_files:
            return True  # the claim area is ours alone: a missing file there means the share is away
        return not readable_dir(self.input_dir)

    def still_on_share(self, entry: LedgerEntry) -> bool:
        """Keep mode: the ledger alone keeps the frame from being processed again while its file is there."""
        try:
            st = share_fs.lstat(self.input_dir, entry.rel_path)
        except FileNotFoundError:
            return not readable_dir(self.input_dir)  # gone, unless the whole share went away meanwhile
        except (OSError, ValueError):
            return True
        return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns


def require_mounted_shares(shares: dict[str, Path]) -> None:
    """REQUIRE_MOUNTED_SHARES: raise ShareError, one sentence, unless each share folder is on a mounted share (a
    container started before its host mounted the share must not take frames from, nor write into, the plain
    folder it sees there). Checked before anything is read or written; IoT Edge restarts the module, and the
    restart finds the share mounted."""
    problems = [f"{name} {path}: {why}" for name, path in shares.items() if (why := share_mount_problem(path))]
    if problems:
        raise ShareError(
            "REQUIRE_MOUNTED_SHARES=true and "
            + "; ".join(problems)
            + ". Mount the share there before the module starts, or set REQUIRE_MOUNTED_SHARES=false"
        )


def share_mount(folder: Path) -> Path | None:
    """The mount point holding `folder` (the share itself, or the share a sub-folder of it lives on)."""
    mount = mount_point_of(folder)
    return None if mount == Path("/") else mount


def mount_gone(mount: Path | None) -> bool:
    """A share mount remembered at start (`share_mount`) that is no longer mounted."""
    return mount is not None and not is_mount_point(mount)


def readable_dir(path: Path) -> bool:
    try:
        with os.scandir(path):
            return True
    except OSError:
        return False
