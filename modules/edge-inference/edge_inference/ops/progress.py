"""Progress on long work: while a backlog drains, one log line every PROGRESS_INTERVAL_SECONDS.

    backlog: 512,300 frames left (estimated from the last sweep), 96.4 frames/s, about 1 h 28 min left

Frames left are the watcher's estimate (the frames the last sweep counted that are not yet taken, share/watcher.py
`frames_left`) plus the frames in flight; the rate is the frames finished over the last interval. A line is written
only while a backlog lasts - more left than one interval's work - and one line says when it is done, so a module
that keeps up with its cameras stays quiet. The same figures are the metrics `edge_inference_backlog_frames`,
`edge_inference_backlog_frames_per_second` and `edge_inference_backlog_seconds_left` (-1 while nothing drains), and
getStatus's `backlog`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    frames_left: int
    frames_per_second: float
    seconds_left: float | None  # None: nothing drains (paused, or the rate is 0)

    def as_status(self) -> dict[str, float | int | None]:
        return {
            "framesLeft": self.frames_left,
            "framesPerSecond": round(self.frames_per_second, 2),
            "secondsLeft": None if self.seconds_left is None else round(self.seconds_left),
        }


def duration(seconds: float) -> str:
    """`1 h 28 min`, `4 min 10 s`, `12 s`."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


class ProgressMonitor(PeriodicWorker):
    """The `progress-monitor` thread: measures the drain every interval, logs while a backlog lasts."""

    def __init__(
        self,
        frames_left: Callable[[], int],
        frames_done: Callable[[], int],
        paused_for: Callable[[], str],
        metrics: MetricsRegistry,
        interval: float,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("progress-monitor", interval, supervisor, tolerant=True, daemon=True)
        self._frames_left = frames_left
        self._frames_done = frames_done
        self._paused_for = paused_for
        self.metrics = metrics
        self.latest = Progress(0, 0.0, None)
        self._mark: tuple[float, int] | None = None  # (time, frames done) at the last measurement
        self._draining_since: tuple[float, int] | None = None

    def setup(self) -> bool:
        self._mark = (time.monotonic(), self._frames_done())
        return True

    def tick(self) -> None:
        self.measure()

    def measure(self, now: float | None = None) -> Progress:
        """Take one measurement (and log it while a backlog lasts)."""
        now = time.monotonic() if now is None else now
        done = self._frames_done()
        start, before = self._mark or (now, done)
        self._mark = (now, done)
        rate = (done - before) / (now - start) if now > start else 0.0
        left = self._frames_left()
        eta = left / rate if rate > 0 and left else None
        self.latest = Progress(left, rate, eta)
        self.metrics.backlog_frames.set(left)
        self.metrics.backlog_rate.set(round(rate, 3))
        self.metrics.backlog_seconds_left.set(-1 if eta is None else round(eta, 1))
        self._log((start, before), now, done, left, rate, eta)
        return self.latest

    def _log(
        self, interval_start: tuple[float, int], now: float, done: int, left: int, rate: float, eta: float | None
    ) -> None:
        backlog = left > 0 and (eta is None or eta > self.interval)
        if backlog:
            if self._draining_since is None:
                self._draining_since = interval_start  # the backlog was there through this interval
            paused = self._paused_for()
            log.info(
                "backlog: %d frames left (estimated from the last sweep), %.1f frames/s, %s",
                left,
                rate,
                f"intake paused ({paused})" if paused else (f"about {duration(eta)} left" if eta else "not draining"),
            )
        elif self._draining_since is not None and left == 0:
            since, first = self._draining_since
            self._draining_since = None
            log.info("backlog done: %d frames in %s", done - first, duration(now - since))
