"""Which file system a path lives on, read from /proc/self/mountinfo.

inotify only sees changes made through this kernel: writes by other SMB/NFS clients (the line PC) never
raise an event, so network and FUSE mounts must be polled. And a share that is unmounted under the module leaves
its mount point behind as a plain folder: `is_mount_point` tells the two apart.

Network and FUSE clients cache a file's attributes: a size read now may be `attribute_cache_seconds` old (cifs
`actimeo`, 1 s by default; NFS `acregmax`, 60 s by default, `noac` none; FUSE `attr_timeout`, 1 s by default and
rarely shown). A frame is complete only once it has been unchanged for longer than that (`settle_window`).
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
    return [(point, fs_type) for point, fs_type, _options in _parse(text)]


def _parse(text: str) -> list[tuple[str, str, str]]:
    """[(mount point, fs type, options)]: the mount's own options and its file system's, comma-joined."""
    return [(point, fs_type, options) for point, fs_type, options, _root in _parse_all(text)]


def _parse_all(text: str) -> list[tuple[str, str, str, str]]:
    """[(mount point, fs type, options, root)]: `root` is the folder of its file system mounted there (`/` for
    a whole file system, the folder's path for a bind mount)."""
    mounts: list[tuple[str, str, str, str]] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        after = right.split()
        if len(fields) < 5 or not after:
            continue
        options = ",".join(f for f in (fields[5] if len(fields) > 5 else "", after[2] if len(after) > 2 else "") if f)
        mounts.append((_unescape(fields[4]), after[0], options, _unescape(fields[3])))
    return mounts


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The fs type of the mount holding `path` (the longest mount point that prefixes it)."""
    return _holding_mount(path, mountinfo)[1]


def mount_point_of(path: Path, mountinfo: str | None = None) -> Path:
    """The mount point of the mount holding `path` (`/` when nothing else is mounted above it)."""
    return Path(_holding_mount(path, mountinfo)[0] or "/")


def mount_options(path: Path, mountinfo: str | None = None) -> dict[str, str]:
    """The options of the mount holding `path` (`{"actimeo": "1", "noac": ""}`)."""
    options = _holding_mount(path, mountinfo)[2]
    pairs = (item.partition("=") for item in options.split(",") if item)
    return {key: value for key, _eq, value in pairs}


def _holding_mount(path: Path, mountinfo: str | None) -> tuple[str, str, str]:
    table = _mount_table(mountinfo)
    if table is None:
        log.warning("cannot read /proc/self/mountinfo; assuming a local file system")
        return "/", "unknown", ""
    target = os.path.realpath(path)
    best: tuple[str, str, str] = ("", "unknown", "")
    for mount_point, fs_type, options in table:
        prefix = mount_point.rstrip("/") + "/"
        if (target == mount_point or target.startswith(prefix) or mount_point == "/") and len(mount_point) >= len(
            best[0]
        ):
            best = (mount_point, fs_type, options)
    return best


def share_mount_problem(path: Path, mountinfo: str | None = None) -> str:
    """Why `path` is not on a mounted share, or "" when it is: a network or FUSE mount, or a whole file system
    mounted there (a disk, a tmpfs). Not a share: a folder of the root file system (a container whose volume was
    never mounted), or a folder of a local file system bound in (Docker binds the host's plain folder when the
    host had not mounted its share yet)."""
    text = mountinfo
    if text is None:
        try:
            text = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return "/proc/self/mountinfo cannot be read"
    target = os.path.realpath(path)
    best = ("", "unknown", "", "")
    for entry in _parse_all(text):
        point = entry[0]
        if (target == point or target.startswith(point.rstrip("/") + "/") or point == "/") and len(point) >= len(
            best[0]
        ):
            best = entry
    point, fs_type, _options, root = best
    if point in ("", "/"):
        return "it is a folder of the root file system, where no share is mounted"
    if needs_polling(fs_type) or root == "/":
        return ""
    return f"it is a folder of the local {fs_type} file system bound in from {root}, not a share"


def is_mount_point(path: Path, mountinfo: str | None = None) -> bool:
    """Whether something is mounted at `path`. `os.path.ismount` answers from the device numbers and misses a
    bind mount from the same file system; mountinfo lists every mount point of this mount namespace."""
    if mountinfo is None and os.path.ismount(path):
        return True
    table = _mount_table(mountinfo)
    target = os.path.realpath(path)
    return table is not None and any(entry[0] == target for entry in table)


def _mount_table(mountinfo: str | None) -> list[tuple[str, str, str]] | None:
    """`parse_mountinfo` of `mountinfo`, or of this process's /proc/self/mountinfo; None when it cannot be read."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    return _parse(mountinfo)


def needs_polling(fs_type: str) -> bool:
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse")


CIFS_DEFAULT_CACHE = 1.0  # seconds: cifs' actimeo default
NFS_DEFAULT_CACHE = 60.0  # seconds: NFS' acregmax default (not shown in mountinfo when it is the default)
FUSE_DEFAULT_CACHE = 1.0  # seconds: libfuse's attr_timeout default (FUSE daemons rarely show theirs)
UNKNOWN_DEFAULT_CACHE = 2.0  # seconds: other network file systems, or no mountinfo to read
SETTLE_MARGIN = 1.0  # seconds beyond the attribute cache: the write and the refresh that shows it take time too


def attribute_cache_seconds(fs_type: str, options: dict[str, str]) -> float:
    """How old a file's size and mtime may be when read through this mount (0 on local file systems)."""

    def seconds(*keys: str) -> float | None:
        for key in keys:
            try:
                return float(options[key])
            except (KeyError, ValueError):
                continue
        return None

    if fs_type in ("cifs", "smb3", "smbfs"):
        found = seconds("acregmax", "actimeo")
        return CIFS_DEFAULT_CACHE if found is None else found
    if fs_type.startswith("nfs"):
        if "noac" in options:
            return 0.0
        found = seconds("acregmax", "actimeo")
        return NFS_DEFAULT_CACHE if found is None else found
    if fs_type.startswith("fuse"):
        found = seconds("attr_timeout")
        return FUSE_DEFAULT_CACHE if found is None else found
    if fs_type in NETWORK_FS_TYPES or fs_type == "unknown":
        return UNKNOWN_DEFAULT_CACHE
    return 0.0


def settle_window(path: Path, settle_seconds: float, mountinfo: str | None = None) -> tuple[float, bool]:
    """(the settle window for frames under `path`, whether mtimes there can be trusted). On a mount that caches
    attributes the window is longer than the cache (a size that stops changing only because it is cached must
    not pass for a finished file), and mtimes are not trusted (over SMB a file's mtime stays at its first write
    until the writer closes it)."""
    _point, fs_type, _options = _holding_mount(path, mountinfo)
    cache = attribute_cache_seconds(fs_type, mount_options(path, mountinfo))
    cached = needs_polling(fs_type) or fs_type == "unknown"
    if not cached:
        return settle_seconds, True
    return max(settle_seconds, cache + SETTLE_MARGIN if cache > 0 else 0.0), False
