"""The durable outbox: telemetry waits here (SQLite in STATE_DIR) until edgeHub has taken it.

`publish` commits the message before it returns, so the pipeline never waits on the network and a killed
process loses nothing it has published; the IoT client drains the outbox in order (`peek`, send, `ack`), also
after a restart. `INSERT OR IGNORE` on the message id: a frame processed again while its message still
waits does not queue twice.

Overflow policy (the only place messages are dropped): beyond `max_messages` the oldest are deleted on insert,
and messages older than `max_age_s` are deleted by `expire()` (called on insert at most every few seconds and
by the client's drain loop). Every drop is counted in `metrics.outbox_dropped{reason=count|age}` and in
`dropped()`, which the IoT client watches to raise the `outboxOverflow` alarm.

One connection guarded by a lock (SQLite in WAL mode, `synchronous=FULL`: a published message survives a
process kill and a power cut); calls are short single statements.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.telemetry import OutgoingMessage
from edge_inference.settings import Settings

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    output TEXT NOT NULL,
    body TEXT NOT NULL,
    properties TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_EXPIRE_EVERY_S = 5.0


class Outbox:
    """A bounded, durable FIFO of `OutgoingMessage`s; implements `TelemetrySink`."""

    def __init__(
        self,
        path: Path,
        max_messages: int,
        max_age_s: float,
        metrics: MetricsRegistry | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        synchronous: str = "FULL",
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_age_s = max_age_s
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute(_SCHEMA)
        self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self._last_expire = 0.0
        self._dropped = {"count": 0, "age": 0}
        self._listeners: list[Callable[[], None]] = []
        if self._count:
            log.info("outbox %s holds %d messages from before", self.path, self._count)
        self.expire()
        self._update_gauges()

    # -- TelemetrySink ----------------------------------------------------------------------------------
    def publish(self, message: OutgoingMessage) -> None:
        """Store the message durably (committed on return). A message id already waiting is ignored."""
        body = json.dumps(message.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        properties = json.dumps(message.properties, ensure_ascii=False, separators=(",", ":"))
        dropped = 0
        with self._lock:
            db = self._conn()
            cur = db.execute(
                "INSERT OR IGNORE INTO outbox (message_id, output, body, properties, created) VALUES (?, ?, ?, ?, ?)",
                (message.message_id, message.output, body, properties, self.wall_clock()),
            )
            self._count += cur.rowcount
            if self._count > self.max_messages:
                dropped = self._delete_oldest(self._count - self.max_messages)
        if dropped:
            self._count_drop("count", dropped)
        if time.monotonic() - self._last_expire >= _EXPIRE_EVERY_S:
            self.expire()
        self._update_gauges()
        for listener in list(self._listeners):
            listener()

    def publish_many(self, messages: list[OutgoingMessage]) -> None:
        """Store several messages in one transaction (one fsync): the dispatcher's group of results."""
        if len(messages) <= 1:
            for message in messages:
                self.publish(message)
            return
        rows = [
            (
                m.message_id,
                m.output,
                json.dumps(m.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False),
                json.dumps(m.properties, ensure_ascii=False, separators=(",", ":")),
                self.wall_clock(),
            )
            for m in messages
        ]
        dropped = 0
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO outbox (message_id, output, body, properties, created) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._count += db.total_changes - before
                if self._count > self.max_messages:
                    dropped = self._delete_oldest(self._count - self.max_messages)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        if dropped:
            self._count_drop("count", dropped)
        self._update_gauges()
        for listener in list(self._listeners):
            listener()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- the drain side -----------------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every publish (the client wakes its drain loop)."""
        self._listeners.append(listener)

    def peek(self, n: int) -> list[tuple[int, OutgoingMessage]]:
        """The oldest `n` messages, in publish order, with their sequence numbers (for `ack`)."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, message_id, output, body, properties FROM outbox ORDER BY seq LIMIT ?", (max(0, n),)
                )
                .fetchall()
            )
        return [
            (int(seq), OutgoingMessage(output, message_id, json.loads(body), json.loads(properties)))
            for seq, message_id, output, body, properties in rows
        ]

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete delivered messages."""
        seq_list = [int(s) for s in seqs]
        if not seq_list:
            return
        with self._lock:
            db = self._conn()
            removed = 0
            for start in range(0, len(seq_list), 500):
                chunk = seq_list[start : start + 500]
                marks = ",".join("?" * len(chunk))
                removed += db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk).rowcount
            self._count -= removed
        self._update_gauges()

    def expire(self) -> int:
        """Drop messages older than `max_age_s`; returns how many."""
        self._last_expire = time.monotonic()
        with self._lock:
            db = self._conn()
            removed = db.execute("DELETE FROM outbox WHERE created < ?", (self.wall_clock() - self.max_age_s,)).rowcount
            self._count -= removed
        if removed:
            self._count_drop("age", removed)
            self._update_gauges()
        return removed

    def depth(self) -> int:
        return self._count

    def dropped(self) -> dict[str, int]:
        """Messages dropped at the bound since this outbox was opened, by reason (`count`, `age`)."""
        with self._lock:
            return dict(self._dropped)

    def oldest_age(self) -> float:
        """Seconds since the first waiting message was published (0 when empty)."""
        with self._lock:
            row = self._conn().execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return max(0.0, self.wall_clock() - float(row[0])) if row and row[0] is not None else 0.0

    # -- internals -----------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is closed")
        return self._db

    def _delete_oldest(self, n: int) -> int:
        removed = (
            self._conn()
            .execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (n,))
            .rowcount
        )
        self._count -= removed
        return int(removed)

    def _count_drop(self, reason: str, n: int) -> None:
        log.warning("outbox bound reached: dropped %d messages (%s)", n, reason)
        with self._lock:
            self._dropped[reason] += n
        if self.metrics is not None:
            self.metrics.outbox_dropped.labels(reason=reason).inc(n)

    def _update_gauges(self) -> None:
        if self.metrics is None:
            return
        self.metrics.outbox_depth.set(self._count)
        with contextlib.suppress(RuntimeError, sqlite3.Error):
            self.metrics.outbox_age.set(self.oldest_age() if self._count else 0.0)


def open_outbox(settings: Settings, metrics: MetricsRegistry) -> Outbox:
    """The durable outbox of STATE_DIR, bounded by OUTBOX_MAX_MESSAGES and OUTBOX_MAX_AGE_HOURS."""
    return Outbox(
        settings.state_dir / "outbox.sqlite",
        settings.outbox_max_messages,
        settings.outbox_max_age_hours * 3600.0,
        metrics,
    )
