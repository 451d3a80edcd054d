"""What the watcher remembers of each folder of the input share, so that a poll costs what changed.

Per folder (`Folder`, keyed by its path relative to INPUT_DIR, "" for the share itself): its sub-folders, its
mtime when it was last listed, and the frame files already dealt with there - taken in keep mode, refused,
found finished by the ledger - as 64-bit hashes of their names, each with a hash of (size, mtime) beside it.
Known names live in two sorted numpy arrays (16 bytes a file: a million kept frames cost 16 MB, not a million
Python strings); recent changes sit in a small dict and set until the next whole listing merges them.

A listing of a folder splits its frame names into known ones (nothing to do: no stat, no candidate) and new
ones. In `keep` mode a known name whose (size, mtime) changed is new again (the full sweep checks that); in the
modes that move frames a taken frame leaves the folder, so only what stays (a refused file) is remembered.

Thread-safety: the scan thread lists and merges; the settle thread tells what it resolved (`remember`,
`forget`); one lock guards the pending changes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)


def name_hash(name: str) -> int:
    """A 64-bit hash of a file name (stable within this process: only kept in memory)."""
    return hash(name)


PENDING = 1  # the signature of a name that is a candidate now (its version is settled later)


def signature_hash(size: int, mtime_ns: int) -> int:
    """A 64-bit hash of a file version (its size and mtime); never 0 (unknown) nor PENDING."""
    h = hash((size, mtime_ns))
    return h if h not in (0, PENDING) else 2


def split_path(rel_path: str) -> tuple[str, str]:
    """(folder, name) of a relative path: `a/b/c.jpg` -> (`a/b`, `c.jpg`); the share's root folder is ""."""
    folder, _sep, name = rel_path.rpartition("/")
    return folder, name


@dataclass(eq=False)
class Folder:
    """One folder of the input share as the watcher last saw it."""

    rel: str
    path: str  # its absolute path
    mtime_ns: int = -1  # when it was last listed whole; -1: never listed
    subdirs: set[str] = field(default_factory=set)
    names: np.ndarray = field(default_factory=lambda: _EMPTY)  # sorted name hashes of known frame files
    sigs: np.ndarray = field(default_factory=lambda: _EMPTY)  # their (size, mtime) hashes, aligned with names
    added: dict[int, int] = field(default_factory=dict)  # known since the last merge: name hash -> signature
    removed: set[int] = field(default_factory=set)  # forgotten since the last merge
    incomplete: bool = False  # it holds new frames the candidate table had no room for
    hot_until: float = 0.0  # listed at every poll until then (a change within the mtime's granularity)
    mtime_lies: bool = False  # frames appeared here without its mtime changing: listed at every poll

    @property
    def known_count(self) -> int:
        """Frame files known here (callers hold the index lock)."""
        count = int(self.names.size)
        if self.removed:
            count -= int(np.count_nonzero(np.isin(self.names, np.fromiter(self.removed, dtype=np.int64))))
        if self.added:
            added = np.fromiter(self.added, dtype=np.int64, count=len(self.added))
            count += int(np.count_nonzero(~np.isin(added, self.names)))
        return count

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """The known signature of each name hash, 0 where it is not known (callers hold the index lock)."""
        out = np.zeros(hashes.size, dtype=np.int64)
        _fill(out, hashes, self.names, self.sigs)
        if self.removed:
            out[np.isin(hashes, np.fromiter(self.removed, dtype=np.int64, count=len(self.removed)))] = 0
        if self.added:
            names = np.fromiter(self.added.keys(), dtype=np.int64, count=len(self.added))
            sigs = np.fromiter(self.added.values(), dtype=np.int64, count=len(self.added))
            order = np.argsort(names)
            _fill(out, hashes, names[order], sigs[order])
        return out

    def merge(self, present: np.ndarray | None) -> None:
        """Fold the pending changes into the arrays; with `present` (the name hashes of a whole listing), also
        drop the names no longer in the folder (callers hold the index lock)."""
        names, sigs = self.names, self.sigs
        if self.removed:
            keep = ~np.isin(names, np.fromiter(self.removed, dtype=np.int64, count=len(self.removed)))
            names, sigs = names[keep], sigs[keep]
        if self.added:
            new_names = np.fromiter(self.added.keys(), dtype=np.int64, count=len(self.added))
            new_sigs = np.fromiter(self.added.values(), dtype=np.int64, count=len(self.added))
            keep = ~np.isin(names, new_names)
            names = np.concatenate([names[keep], new_names])
            sigs = np.concatenate([sigs[keep], new_sigs])
        if present is not None:
            keep = np.isin(names, present)
            names, sigs = names[keep], sigs[keep]
        order = np.argsort(names, kind="stable")
        self.names, self.sigs = names[order], sigs[order]
        self.added, self.removed = {}, set()


class FolderIndex:
    """Every folder of the input share the watcher knows, and the frame files it has dealt with in each."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lock = threading.Lock()
        self._folders: dict[str, Folder] = {"": Folder("", root)}

    def get(self, rel: str) -> Folder | None:
        with self.lock:
            return self._folders.get(rel)

    def folder(self, rel: str) -> Folder:
        """The folder `rel`, made (with its parents linked to it) when it is new."""
        with self.lock:
            return self._folder(rel)

    def _folder(self, rel: str) -> Folder:
        found = self._folders.get(rel)
        if found is None:
            found = self._folders[rel] = Folder(rel, os.path.join(self.root, rel))
            if rel:
                parent, name = split_path(rel)
                self._folder(parent).subdirs.add(name)
        return found

    def folders(self) -> list[Folder]:
        with self.lock:
            return list(self._folders.values())

    def drop(self, rel: str) -> None:
        """Forget a folder that is gone, and everything below it."""
        with self.lock:
            prefix = rel + "/"
            for key in [k for k in self._folders if k == rel or k.startswith(prefix)]:
                if key:
                    del self._folders[key]
            parent, name = split_path(rel)
            if parent in self._folders:
                self._folders[parent].subdirs.discard(name)

    def remember(self, rel_path: str, size: int | None = None, mtime_ns: int = 0) -> None:
        """A frame file dealt with (taken in keep mode, refused, found finished): not a candidate again while
        this version of it stays. Without a size: a candidate now (PENDING), so that listings skip it at numpy
        speed instead of asking the candidate table."""
        folder, name = split_path(rel_path)
        h = name_hash(name)
        with self.lock:
            entry = self._folder(folder)
            entry.removed.discard(h)
            entry.added[h] = PENDING if size is None else signature_hash(size, mtime_ns)

    def forget(self, rel_path: str) -> None:
        """A frame file taken away (the modes that move frames): should its name come back, it is new."""
        folder, name = split_path(rel_path)
        h = name_hash(name)
        with self.lock:
            entry = self._folders.get(folder)
            if entry is not None:
                entry.added.pop(h, None)
                entry.removed.add(h)

    def known_files(self) -> int:
        with self.lock:
            return sum(f.known_count for f in self._folders.values())

    def memory_bytes(self) -> int:
        """The numpy arrays' bytes (what a big share costs the index)."""
        with self.lock:
            return sum(f.names.nbytes + f.sigs.nbytes for f in self._folders.values())


def _fill(out: np.ndarray, hashes: np.ndarray, names: np.ndarray, sigs: np.ndarray) -> None:
    """out[i] = the signature of hashes[i] where the sorted `names` hold it."""
    if not names.size or not hashes.size:
        return
    at = np.searchsorted(names, hashes)
    at[at >= names.size] = 0
    hit = names[at] == hashes
    out[hit] = sigs[at[hit]]
