"""The output catalog: every file the module writes to the output share, in SQLite under STATE_DIR.

Output retention (share/retention.py) removes files oldest first, and only files the module wrote: a folder walk
could not tell them from a file someone else put in `results/`, and a walk of millions of files would be the
very cost the retention is there to avoid. So each write is recorded here first - its output folder, its path
relative to OUTPUT_DIR, the frame it belongs to (a frame's files in one folder are removed together: the failed
original and its `.error.json`; a review copy, its label file and its crops), its size and the time - and the
retention asks for the oldest rows. A row is written before its file (an intent): a row whose file never came,
or whose file is no longer the one written (another size, not a regular file), is dropped, its file untouched.

Per-folder totals are kept by triggers in the same transactions, so the size check is one row per folder.
Paths are stored as the bytes the file system holds (names that are not UTF-8 included).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge_inference.share.ledger import open_state_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    folder     TEXT NOT NULL,
    path       BLOB NOT NULL,
    frame      BLOB NOT NULL,
    bytes      INTEGER NOT NULL,
    written_at REAL NOT NULL,
    PRIMARY KEY (folder, path)
);
CREATE INDEX IF NOT EXISTS outputs_age ON outputs (folder, written_at);
CREATE INDEX IF NOT EXISTS outputs_frame ON outputs (folder, frame);
CREATE TABLE IF NOT EXISTS totals (folder TEXT PRIMARY KEY, bytes INTEGER NOT NULL, files INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS outputs_in AFTER INSERT ON outputs BEGIN
    INSERT INTO totals (folder, bytes, files) VALUES (new.folder, new.bytes, 1)
    ON CONFLICT (folder) DO UPDATE SET bytes = bytes + new.bytes, files = files + 1;
END;
CREATE TRIGGER IF NOT EXISTS outputs_out AFTER DELETE ON outputs BEGIN
    UPDATE totals SET bytes = bytes - old.bytes, files = files - 1 WHERE folder = old.folder;
END;
CREATE TRIGGER IF NOT EXISTS outputs_new AFTER UPDATE OF bytes ON outputs BEGIN
    UPDATE totals SET bytes = bytes - old.bytes + new.bytes WHERE folder = old.folder;
END;
"""
_UPSERT = (
    "INSERT INTO outputs (folder, path, frame, bytes, written_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (folder, path) DO UPDATE SET frame = excluded.frame, bytes = excluded.bytes,"
    " written_at = excluded.written_at"
)


@dataclass(frozen=True)
class OutputFile:
    """One file the module writes: `path` relative to OUTPUT_DIR (its first part is the output folder)."""

    path: str
    frame: str  # the input relative path it belongs to (a review copy: `<date>/<path>`)
    size: int

    @property
    def folder(self) -> str:
        return self.path.partition("/")[0]


@dataclass(frozen=True)
class CatalogRow:
    path: str
    frame: str
    size: int
    written_at: float


class OutputCatalog:
    """Thread-safe SQLite catalog of the module's output files (one connection, one lock, WAL)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_state_db(path, _SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record(self, files: Iterable[OutputFile], at: float | None = None) -> None:
        """Note files about to be written (one transaction); a path written again is updated."""
        now = time.time() if at is None else at
        rows = [(f.folder, os.fsencode(f.path), os.fsencode(f.frame), f.size, now) for f in files]
        if rows:
            with self._tx() as db:
                db.executemany(_UPSERT, rows)

    def oldest(self, folder: str, limit: int, before: float | None = None) -> list[CatalogRow]:
        """The `limit` oldest files of `folder` (written before `before`, when given), oldest first."""
        query = "SELECT path, frame, bytes, written_at FROM outputs WHERE folder = ?"
        args: list[object] = [folder]
        if before is not None:
            query += " AND written_at < ?"
            args.append(before)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY written_at LIMIT ?", (*args, limit)).fetchall()
        return [CatalogRow(os.fsdecode(p), os.fsdecode(f), int(b), float(w)) for p, f, b, w in rows]

    def of_frames(self, folder: str, frames: Iterable[str]) -> list[CatalogRow]:
        """Every file of these frames in `folder` (a frame's files go together)."""
        keys = [os.fsencode(f) for f in frames]
        out: list[CatalogRow] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT path, frame, bytes, written_at FROM outputs WHERE folder = ? AND frame IN ({marks})",
                    (folder, *chunk),
                ).fetchall()
            out += [CatalogRow(os.fsdecode(p), os.fsdecode(f), int(b), float(w)) for p, f, b, w in rows]
        return out

    def forget(self, folder: str, paths: Iterable[str]) -> None:
        keys = [(folder, os.fsencode(p)) for p in paths]
        if keys:
            with self._tx() as db:
                db.executemany("DELETE FROM outputs WHERE folder = ? AND path = ?", keys)

    def totals(self) -> dict[str, tuple[int, int]]:
        """folder -> (bytes, files) the catalog holds."""
        with self._lock:
            rows = self._db.execute("SELECT folder, bytes, files FROM totals").fetchall()
        return {str(folder): (int(size), int(files)) for folder, size, files in rows}

    def count_since(self, folder: str, since: float) -> int:
        """Files of `folder` written since `since` (the review copies of the current hour, at a restart)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(DISTINCT frame) FROM outputs WHERE folder = ? AND written_at >= ?", (folder, since)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
