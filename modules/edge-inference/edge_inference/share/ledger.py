"""The ledger: which frame versions are claimed and done, in SQLite under STATE_DIR.

A frame version is (relative path, size, mtime_ns); its `frame_id` is derived from them. The result file
on the output share is the mark of a finished frame; the ledger is the fast index of it, so a lost ledger
row only means a frame is processed again and its result file rewritten in place (never a duplicate).

A frame processed again on request (the `reprocess` method) is a new result of the same frame version: the
ledger counts these generations, and the n-th one's messages carry `<frame id>.r<n>` as their id, so that
upstream de-duplication, which rightly drops a resend, does not drop the new result.

Finished frames are forgotten after the retention period (`prune`), in small steps, so the ledger of a box that
runs for months stays the size of a few days of frames. A row that must stay (its frame is still on a `keep`
share) has its time renewed, so it is checked again only one retention period later.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    frame_id   TEXT PRIMARY KEY,
    rel_path   TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('claimed', 'done', 'failed')),
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_rel_path ON frames (rel_path);
CREATE INDEX IF NOT EXISTS frames_updated_at ON frames (updated_at);
CREATE TABLE IF NOT EXISTS reprocessed (
    frame_id   TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
"""


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
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

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
        with self._tx() as db:
            db.execute(
                "INSERT INTO frames (frame_id, rel_path, size, mtime_ns, state, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (frame_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (frame_id, rel_path, size, mtime_ns, state, time.time()),
            )

    def record_many(self, rows: list[tuple[str, str, int, int, str]]) -> None:
        """(frame_id, rel_path, size, mtime_ns, state) rows in one transaction."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO frames (frame_id, rel_path, size, mtime_ns, state, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (frame_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                [(*row, now) for row in rows],
            )

    def finished_matching(self, pattern: str) -> list[LedgerEntry]:
        """Finished frames whose relative path equals `pattern` or matches it as a glob."""
        with self._lock:
            rows = self._db.execute(
                "SELECT frame_id, rel_path, size, mtime_ns, state, updated_at FROM frames"
                " WHERE state IN ('done', 'failed') ORDER BY rel_path"
            ).fetchall()
        return [LedgerEntry(*row) for row in rows if row[1] == pattern or fnmatch.fnmatchcase(str(row[1]), pattern)]

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
                "SELECT frame_id, rel_path, size, mtime_ns, state, updated_at FROM frames"
                " WHERE updated_at < ? AND state IN ('done', 'failed') ORDER BY updated_at LIMIT ?",
                (cutoff, limit),
            ).fetchall()
        entries = [LedgerEntry(*row) for row in rows]
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
