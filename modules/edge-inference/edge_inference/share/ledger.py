"""The ledger: which frame versions are claimed and done, in SQLite under STATE_DIR.

A frame version is (relative path, size, mtime_ns); its `frame_id` is derived from them. The result file
on the output share is the mark of a finished frame; the ledger is the fast index of it, so a lost ledger
row only means a frame is processed again and its result file rewritten in place (never a duplicate).

A frame processed again on request (the `reprocess` method) is a new result of the same frame version: the
ledger counts these generations, and the n-th one's messages carry `<frame id>.r<n>` as their id, so that
upstream de-duplication, which rightly drops a resend, does not drop the new result.

Each start of a frame's processing is counted (`begin_attempt`, committed before the work starts), so a frame
whose processing kills the process is known at the restart to have been tried: after MAX_FRAME_ATTEMPTS starts
that never finished it is quarantined instead of resumed into a crash loop (pipeline/quarantine.py). A failure the
frame cannot help (the share went away) is forgiven (`forgive`).

A relative path is stored as text, or, for a name that is not UTF-8 (names.py), as the BLOB of its bytes: SQLite
text must be UTF-8, and the bytes give back exactly the name the file system holds.

Finished frames are forgotten after the retention period (`prune`), in small steps, so the ledger of a box that
runs for months stays the size of a few days of frames. A row that must stay (its frame is still on a `keep`
share) has its time renewed, so it is checked again only one retention period later.
"""

from __future__ import annotations

import fnmatch
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_inference.names import name_bytes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    frame_id   TEXT PRIMARY KEY,
    rel_path   TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('claimed', 'done', 'failed')),
    updated_at REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS frames_rel_path ON frames (rel_path);
CREATE INDEX IF NOT EXISTS frames_updated_at ON frames (updated_at);
CREATE TABLE IF NOT EXISTS reprocessed (
    frame_id   TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
"""


_ENTRY = "SELECT frame_id, rel_path, size, mtime_ns, state, updated_at FROM frames"
_UPSERT = (
    "INSERT INTO frames (frame_id, rel_path, size, mtime_ns, state, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (frame_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
)


def _stored(rel_path: str) -> str | bytes:
    """The column value of a relative path: text when it is UTF-8, else its file-system bytes."""
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:
        return name_bytes(rel_path)
    return rel_path


def _entry(row: Any) -> LedgerEntry:
    rel = row[1]
    return LedgerEntry(row[0], os.fsdecode(rel) if isinstance(rel, bytes) else str(rel), *row[2:])


def open_state_db(path: Path, schema: str) -> sqlite3.Connection:
    """A SQLite database of STATE_DIR, as the ledger and the output catalog keep theirs: one connection shared by
    threads (callers hold their own lock), autocommit, WAL (readers never block the writer), its schema made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


@dataclass(frozen=True)
class LedgerEntry:
    frame_id: str
    rel_path: str
    size: int
    mtime_ns: int
    state: str
    updated_at: float


class Ledger:
    """Thread-safe SQLite ledger (one connection, one lock; WAL so readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_state_db(path, _SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(frames)")}
        if "attempts" not in columns:  # a ledger written before attempts were counted
            self._db.execute("ALTER TABLE frames ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
            self._db.execute("ALTER TABLE frames ADD COLUMN last_error TEXT")

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

    def state(self, frame_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM frames WHERE frame_id = ?", (frame_id,)).fetchone()
        return None if row is None else str(row[0])

    def is_finished(self, frame_id: str) -> bool:
        return self.state(frame_id) in ("done", "failed")

    def record(self, frame_id: str, rel_path: str, size: int, mtime_ns: int, state: str) -> None:
        self.record_many([(frame_id, rel_path, size, mtime_ns, state)])

    def record_many(self, rows: list[tuple[str, str, int, int, str]]) -> None:
        """(frame_id, rel_path, size, mtime_ns, state) rows in one transaction."""
        now = time.time()
        with self._tx() as db:
            db.executemany(_UPSERT, [(f, _stored(rel), size, mtime, state, now) for f, rel, size, mtime, state in rows])

    def begin_attempt(self, frame_id: str, rel_path: str, size: int, mtime_ns: int) -> tuple[int, str | None]:
        """Count one more start of this frame's processing, committed before the work starts; returns how many
        starts there have been (this one included) and the last failure noted for it."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO frames (frame_id, rel_path, size, mtime_ns, state, updated_at, attempts)"
                " VALUES (?, ?, ?, ?, 'claimed', ?, 1)"
                " ON CONFLICT (frame_id) DO UPDATE SET attempts = attempts + 1, updated_at = excluded.updated_at",
                (frame_id, _stored(rel_path), size, mtime_ns, time.time()),
            )
            row = db.execute("SELECT attempts, last_error FROM frames WHERE frame_id = ?", (frame_id,)).fetchone()
        return int(row[0]), row[1]

    def note_failure(self, frame_id: str, error: str) -> None:
        """Remember why an attempt did not finish (shown when the frame is quarantined)."""
        with self._tx() as db:
            db.execute("UPDATE frames SET last_error = ? WHERE frame_id = ?", (error[:500], frame_id))

    def forgive(self, frame_id: str) -> None:
        """The last attempt failed through no fault of the frame (a share went away): it does not count."""
        with self._tx() as db:
            db.execute("UPDATE frames SET attempts = MAX(attempts - 1, 0) WHERE frame_id = ?", (frame_id,))

    def finished_among(self, frame_ids: list[str]) -> set[str]:
        """Which of these frame versions are finished (the watcher's look at a kept share after a restart)."""
        found: set[str] = set()
        for start in range(0, len(frame_ids), 500):
            chunk = frame_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT frame_id FROM frames WHERE state IN ('done', 'failed') AND frame_id IN ({marks})", chunk
                ).fetchall()
            found.update(str(row[0]) for row in rows)
        return found

    def finished_matching(self, pattern: str) -> list[LedgerEntry]:
        """Finished frames whose relative path equals `pattern` or matches it as a glob."""
        with self._lock:
            rows = self._db.execute(_ENTRY + " WHERE state IN ('done', 'failed') ORDER BY rel_path").fetchall()
        entries = [_entry(row) for row in rows]
        return [e for e in entries if e.rel_path == pattern or fnmatch.fnmatchcase(e.rel_path, pattern)]

    def reopen(self, frame_ids: list[str]) -> dict[str, int]:
        """Forget that these frames are finished, to process them again; returns each one's new generation."""
        with self._tx() as db:
            db.executemany("DELETE FROM frames WHERE frame_id = ?", [(f,) for f in frame_ids])
            db.executemany(
                "INSERT INTO reprocessed (frame_id, generation) VALUES (?, 1)"
                " ON CONFLICT (frame_id) DO UPDATE SET generation = generation + 1",
                [(f,) for f in frame_ids],
            )
            marks = ",".join("?" * len(frame_ids))
            rows = db.execute(f"SELECT frame_id, generation FROM reprocessed WHERE frame_id IN ({marks})", frame_ids)
            return {str(f): int(g) for f, g in rows.fetchall()}

    def prune(
        self,
        retention_seconds: float,
        keep: Callable[[LedgerEntry], bool] | None = None,
        limit: int = 500,
        now: float | None = None,
    ) -> tuple[list[str], bool]:
        """Forget up to `limit` finished frames last updated more than `retention_seconds` before `now`, except
        those `keep` says must stay (their time is renewed to `now` instead). `keep` runs outside the lock (it
        may touch a share). Returns the frame ids forgotten, and whether more may be due."""
        now = time.time() if now is None else now
        cutoff = now - retention_seconds
        with self._lock:
            rows = self._db.execute(
                _ENTRY + " WHERE updated_at < ? AND state IN ('done', 'failed') ORDER BY updated_at LIMIT ?",
                (cutoff, limit),
            ).fetchall()
        entries = [_entry(row) for row in rows]
        kept = [e.frame_id for e in entries if keep is not None and keep(e)]
        kept_set = set(kept)
        candidates = [e.frame_id for e in entries if e.frame_id not in kept_set]
        gone = []
        with self._tx() as db:
            for frame_id in candidates:  # a frame recorded again meanwhile (re-claimed, reprocessed) stays
                if db.execute("DELETE FROM frames WHERE frame_id = ? AND updated_at < ?", (frame_id, cutoff)).rowcount:
                    gone.append(frame_id)
            db.executemany("DELETE FROM reprocessed WHERE frame_id = ?", [(f,) for f in gone])
            db.executemany("UPDATE frames SET updated_at = ? WHERE frame_id = ?", [(now, f) for f in kept])
        return gone, len(rows) == limit

    def generations(self) -> dict[str, int]:
        """Every frame processed again on request, with how many times (small: reprocess is manual)."""
        with self._lock:
            rows = self._db.execute("SELECT frame_id, generation FROM reprocessed").fetchall()
        return {str(f): int(g) for f, g in rows}

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM frames GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
