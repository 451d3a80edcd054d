"""Which messages a processed frame produces, and where local mode puts them.

`TelemetryPublisher` is what the pipeline's finish stage calls once per processed share frame; it honours the
live `telemetry` twin settings (perFrame / summary / off) and sends alerts for `alertClasses` on `alerts`
(health alarms go through `ops/alarms.py`). `GroupedSink` stores the messages of one group of results
together. `LocalTelemetrySink` is local mode's stand-in for edgeHub: one JSON line per message in
`OUTPUT_DIR/telemetry.jsonl` (the console shows one readable line per frame instead: ops/console.py);
`NullSink` takes messages nowhere (LOCAL_TELEMETRY=false). The output retention keeps telemetry.jsonl within its
limits by rotation (`keep_within`: the file becomes telemetry.jsonl.1, whose predecessor goes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TextIO

from edge_inference.entities import FrameResult
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.telemetry import (
    OutgoingMessage,
    SummaryWindow,
    TelemetrySink,
    alert_labels,
    build_alert_message,
    build_detection_message,
)

log = logging.getLogger(__name__)


class TelemetryPublisher:
    """Decides which messages a processed frame produces and hands them to the sink.

    Thread-safe: `on_result`/`tick` come from the pipeline's threads. A sink that fails is logged and never
    stops the pipeline (the result file on the share is the record of the frame). Inside `group()` the
    messages of one group of results are stored together (one outbox transaction).
    `clock` (monotonic) paces nothing but is kept for tests; summary windows follow `wall_clock` so that
    their ids (`summary-<window start>-<seconds>s`) are the same on every replica and after a restart.
    """

    def __init__(
        self,
        sink: TelemetrySink,
        live: LiveSettings,
        metrics: MetricsRegistry,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = GroupedSink(sink)
        self.live = live
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._window: SummaryWindow | None = None
        self._closed = False

    # -- frames --------------------------------------------------------------------------------------------
    def on_result(self, result: FrameResult) -> None:
        """One processed frame (ok or failed): per-frame / summary telemetry and alerts, per the live twin."""
        settings = self.live.current()
        telemetry = settings.telemetry
        outgoing: list[OutgoingMessage] = []
        with self._lock:
            outgoing.extend(self._due_summary(telemetry.mode, telemetry.summary_interval_seconds))
            if telemetry.mode == "perFrame":
                if result.detections or result.error is not None or telemetry.include_empty:
                    outgoing.append(build_detection_message(result))
            elif telemetry.mode == "summary":
                if self._window is None:
                    self._window = self._new_window(telemetry.summary_interval_seconds)
                self._window.add(result)
            matched = alert_labels(result, settings.alert_classes)
            if matched:
                outgoing.append(build_alert_message(result, matched))
        self._publish(outgoing)

    def tick(self) -> None:
        """Flush a summary whose interval has ended (the housekeeping calls this about once a second)."""
        telemetry = self.live.current().telemetry
        with self._lock:
            outgoing = self._due_summary(telemetry.mode, telemetry.summary_interval_seconds)
        self._publish(outgoing)

    def group(self) -> contextlib.AbstractContextManager[None]:
        """Messages published inside (on this thread) are stored together when the block ends."""
        return self.sink.group()

    def close(self) -> None:
        """Flush the pending summary (a partial interval) and stop; the sink is closed by its owner."""
        with self._lock:
            window, self._window = self._window, None
            self._closed = True
        if window is not None and window.frames:
            self._publish([window.message()])

    def _new_window(self, seconds: float) -> SummaryWindow:
        seconds = max(1.0, float(seconds))
        return SummaryWindow(start=math.floor(self.wall_clock() / seconds) * seconds, seconds=seconds)

    def _due_summary(self, mode: str, seconds: float) -> list[OutgoingMessage]:
        """Close the open window when its interval ended, or the mode/interval changed (lock held)."""
        window = self._window
        if window is None:
            return []
        ended = self.wall_clock() >= window.start + window.seconds
        if ended or mode != "summary" or float(seconds) != window.seconds:
            self._window = None
            return [window.message()] if window.frames else []
        return []

    def _publish(self, messages: list[OutgoingMessage]) -> None:
        for message in messages:
            try:
                self.sink.publish(message)
            except Exception:
                log.exception("telemetry sink failed; message %s on %s lost", message.message_id, message.output)


class LocalTelemetrySink:
    """Local mode's edgeHub: each message appended as one JSON line to `output_dir/telemetry.jsonl` (line-buffered
    and flushed per line; no fsync: a debugging aid), and logged whole at DEBUG (LOG_LEVEL=DEBUG)."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / "telemetry.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._started = _first_line_time(self.path)  # when the current file's first line was written

    def publish(self, message: OutgoingMessage) -> None:
        line = json.dumps(
            {
                "output": message.output,
                "messageId": message.message_id,
                "properties": message.properties,
                "body": message.body,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        with self._lock:
            if self._file is None:
                raise RuntimeError("LocalTelemetrySink is closed")
            self._file.write(line + "\n")
            self._file.flush()
            if self._started is None:
                self._started = time.time()
        log.debug("telemetry %s", line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def keep_within(self, max_bytes: int, max_age_seconds: float) -> int:
        """Rotate telemetry.jsonl into telemetry.jsonl.1 (the previous .1 goes) once it holds half of `max_bytes`
        or its first line is half of `max_age_seconds` old, and remove telemetry.jsonl.1 once its last line is
        half of `max_age_seconds` old (or alone holds more than `max_bytes`: a burst between two calls): the two
        files stay under `max_bytes`, no line is kept longer than `max_age_seconds` (0: no limit). Returns the
        bytes the two files hold."""
        older = self.path.with_name(self.path.name + ".1")
        now = time.time()
        with self._lock:
            if self._file is None:
                return 0
            size = os.fstat(self._file.fileno()).st_size
            half_age = max_age_seconds / 2
            too_big = max_bytes > 0 and size >= max_bytes / 2
            too_old = half_age > 0 and self._started is not None and now - self._started >= half_age
            if size and (too_big or too_old):
                self._file.close()
                os.replace(self.path, older)
                self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
                self._started = None
            try:
                st = older.stat()
            except FileNotFoundError:
                return os.fstat(self._file.fileno()).st_size
            if (half_age > 0 and now - st.st_mtime >= half_age) or (max_bytes > 0 and st.st_size > max_bytes):
                older.unlink()
                return os.fstat(self._file.fileno()).st_size
            return os.fstat(self._file.fileno()).st_size + st.st_size


def _first_line_time(path: Path) -> float | None:
    """When the first line of a telemetry.jsonl was written (its message's time), or None for an empty file."""
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline(1 << 20)
    except OSError:
        return None
    if not line.strip():
        return None
    try:
        body = json.loads(line).get("body", {})
        stamp = body.get("processedAt") or body.get("at") or (body.get("summary") or {}).get("end")
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError, TypeError):
        return path.stat().st_mtime


class GroupedSink:
    """Wraps a sink so that the messages published inside `group()` (on that thread) are stored together.

    The dispatcher makes a group of results durable at once; with the outbox underneath, their messages then
    cost one SQLite transaction (one fsync) instead of one per frame. Outside a group it passes through."""

    def __init__(self, inner: TelemetrySink) -> None:
        self.inner = inner
        self._local = threading.local()

    def publish(self, message: OutgoingMessage) -> None:
        buffer: list[OutgoingMessage] | None = getattr(self._local, "buffer", None)
        if buffer is None:
            self.inner.publish(message)
        else:
            buffer.append(message)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        self._local.buffer = []
        try:
            yield
        finally:
            buffer: list[OutgoingMessage] = self._local.buffer
            self._local.buffer = None
            many = getattr(self.inner, "publish_many", None)
            if callable(many):
                many(buffer)
            else:
                for message in buffer:
                    self.inner.publish(message)

    def close(self) -> None:
        self.inner.close()


class NullSink:
    """A sink that keeps nothing: local mode with LOCAL_TELEMETRY=false."""

    def publish(self, message: OutgoingMessage) -> None:
        return None

    def close(self) -> None:
        return None
