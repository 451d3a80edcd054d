"""Which file system a path lives on, read from /proc/self/mountinfo.

inotify only sees changes made through this kernel: writes by other SMB/NFS clients (the line PC) never
raise an event, so network and FUSE mounts must be polled. And a share that is unmounted under the module leaves
its mount point behind as a plain folder: `is_mount_point` tells the two apart.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# File-system types on which inotify cannot see other machines' writes.
NETWORK_FS_TYPES = frozenset({"cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "afs", "ceph", "glusterfs", "lustre"})


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """[(mount point, fs type)] from the text of /proc/self/mountinfo."""
    mounts: list[tuple[str, str]] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        after = right.split()
        if len(fields) < 5 or not after:
            continue
        mounts.append((_unescape(fields[4]), after[0]))
    return mounts


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The fs type of the mount holding `path` (the longest mount point that prefixes it)."""
    return _holding_mount(path, mountinfo)[1]


def mount_point_of(path: Path, mountinfo: str | None = None) -> Path:
    """The mount point of the mount holding `path` (`/` when nothing else is mounted above it)."""
    return Path(_holding_mount(path, mountinfo)[0] or "/")


def _holding_mount(path: Path, mountinfo: str | None) -> tuple[str, str]:
    table = _mount_table(mountinfo)
    if table is None:
        log.warning("cannot read /proc/self/mountinfo; assuming a local file system")
        return "/", "unknown"
    target = os.path.realpath(path)
    best, best_type = "", "unknown"
    for mount_point, fs_type in table:
        prefix = mount_point.rstrip("/") + "/"
        if (target == mount_point or target.startswith(prefix) or mount_point == "/") and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best, best_type


def is_mount_point(path: Path, mountinfo: str | None = None) -> bool:
    """Whether something is mounted at `path`. `os.path.ismount` answers from the device numbers and misses a
    bind mount from the same file system; mountinfo lists every mount point of this mount namespace."""
    if mountinfo is None and os.path.ismount(path):
        return True
    table = _mount_table(mountinfo)
    target = os.path.realpath(path)
    return table is not None and any(mount_point == target for mount_point, _ in table)


def _mount_table(mountinfo: str | None) -> list[tuple[str, str]] | None:
    """`parse_mountinfo` of `mountinfo`, or of this process's /proc/self/mountinfo; None when it cannot be read."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    return parse_mountinfo(mountinfo)


def needs_polling(fs_type: str) -> bool:
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse")
