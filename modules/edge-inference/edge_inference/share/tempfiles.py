"""Temp files beside the files they become: their names, and their clean-up when a write fails or a run dies.

A temp name is `.<name>.<replica>.<pid>.<thread>.tmp`: hidden from the watcher, unique per writer, and tagged
with the replica so that a start-up sweep removes this replica's leftovers and never a live replica's. When a
write fails because the share went away (an unmounted or dead SMB/NFS mount), the temp file cannot be removed
either; it is remembered and removed by `sweep_orphans` once the share answers again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_tag = "ei"  # replaced by the replica id at start (`set_tag`): whose temp file it is
_orphans: set[Path] = set()
_orphans_lock = threading.Lock()


def set_tag(tag: str) -> None:
    global _tag
    _tag = tag


def temp_path(path: Path) -> Path:
    """`.<name>.<replica>.<pid>.<thread>.tmp` beside `path` (fits NAME_MAX; hidden from the watcher)."""
    return path.with_name(temp_name(path.name))


def temp_name(name: str) -> str:
    """The temp name for a file named `name` (see `temp_path`)."""
    return f".{_short(name)}.{_tag[:40]}.{os.getpid()}.{threading.get_ident() % 100000}.tmp"


def discard(tmp: Path) -> None:
    """Remove the temp file of a failed write; if that fails too (the share is away), remember it."""
    if not _remove(tmp):
        log.warning("cannot remove %s now: the share looks away (removed when it is back)", tmp)
        with _orphans_lock:
            _orphans.add(tmp)


def sweep_orphans() -> int:
    """Remove the temp files `discard` could not; returns how many are still waiting."""
    with _orphans_lock:
        waiting = list(_orphans)
    for tmp in waiting:
        if _remove(tmp):
            with _orphans_lock:
                _orphans.discard(tmp)
    with _orphans_lock:
        return len(_orphans)


def _remove(tmp: Path) -> bool:
    """True once `tmp` is gone for good; False while its folder cannot be reached (the file may be behind
    an unmounted share, where a lazily unmounted writer finished it, and come back with the share)."""
    try:
        tmp.unlink()
    except FileNotFoundError:
        return tmp.parent.is_dir()
    except OSError:
        return False
    return True


def remove_stale(root: Path, tag: str, stale_seconds: float = 3600.0) -> int:
    """Temp files a kill -9 left in the output share: this replica's (`.<name>.<tag>.<pid>.<tid>.tmp`), and any
    replica's older than `stale_seconds` - never a live replica's file in the middle of its write."""
    mine, now = _tagged(tag), time.time()
    return _remove_temps(root, lambda name, st: bool(mine.search(name)) or now - st.st_mtime > stale_seconds)


def remove_replicas(root: Path, tag: str) -> int:
    """The temp files of replica `tag` only: called once that replica is known dead (its claims were taken over
    after CLAIM_STALE_SECONDS of silence), since the pod started in its place has a new name and would leave them
    for an hour. One walk of the output share per dead replica."""
    theirs = _tagged(tag)
    return _remove_temps(root, lambda name, _st: bool(theirs.search(name)))


def _tagged(tag: str) -> re.Pattern[str]:
    """A temp name of replica `tag` (`temp_name`): the tag then the pid and thread numbers before `.tmp`."""
    return re.compile(rf"\.{re.escape(tag[:40])}\.\d+\.\d+\.tmp$")


def _remove_temps(root: Path, doomed: Callable[[str, os.stat_result], bool]) -> int:
    removed = 0
    if not root.is_dir():
        return 0
    for _dirpath, _dirs, files, folder in os.fwalk(root):  # folder fds, symlinks never followed
        for name in files:
            if not (name.startswith(".") and name.endswith((".tmp", ".part"))):
                continue
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=folder, follow_symlinks=False)
                if doomed(name, st):
                    os.unlink(name, dir_fd=folder)
                    removed += 1
    return removed


def _short(name: str) -> str:
    """A temp-file stem that fits NAME_MAX with the pid/thread suffix (long names are hashed)."""
    raw = os.fsencode(name)
    if len(raw) <= 200:
        return name
    return os.fsdecode(raw[:120]) + "~" + hashlib.sha256(raw).hexdigest()[:12]
