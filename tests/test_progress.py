"""Progress on long work (ops/progress.py): one line per interval while a backlog drains (frames/s, frames left,
time left), one when it is done, none while the module keeps up; the same figures as metrics and in getStatus."""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import logging

import pytest

from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.progress import ProgressMonitor, duration
from tests.test_pipeline import eventually, frame, model_path, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)


class Share:
    """The backlog as the monitor sees it: frames left and frames done, moved by the test."""

    def __init__(self, left: int) -> None:
        self.left, self.done, self.paused = left, 0, ""

    def drain(self, frames: int) -> None:
        frames = min(frames, self.left)
        self.left -= frames
        self.done += frames


def monitor(share: Share, metrics: MetricsRegistry, interval: float = 30.0) -> ProgressMonitor:
    m = ProgressMonitor(lambda: share.left, lambda: share.done, lambda: share.paused, metrics, interval)
    m._mark = (0.0, 0)
    return m


def test_a_draining_backlog_logs_rate_left_and_time_left_then_done(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "edge_inference.ops.progress")
    share, metrics = Share(100_000), MetricsRegistry()
    m = monitor(share, metrics)
    share.drain(3000)  # 100 frames/s over the first 30 s
    p = m.measure(30.0)
    assert (p.frames_left, p.frames_per_second, round(p.seconds_left or 0)) == (97_000, 100.0, 970)
    assert caplog.messages[-1] == (
        "backlog: 97000 frames left (estimated from the last sweep), 100.0 frames/s, about 16 min 10 s left"
    )
    assert metrics.backlog_frames._value.get() == 97_000
    assert metrics.backlog_rate._value.get() == 100.0 and metrics.backlog_seconds_left._value.get() == 970.0
    share.paused = "outputFull"
    m.measure(60.0)  # nothing drained: the line says why
    assert caplog.messages[-1].endswith("0.0 frames/s, intake paused (outputFull)")
    assert metrics.backlog_seconds_left._value.get() == -1
    share.paused = ""
    share.drain(97_000)
    m.measure(90.0)
    assert caplog.messages[-1] == "backlog done: 100000 frames in 1 min 30 s"
    assert m.latest.as_status() == {"framesLeft": 0, "framesPerSecond": 3233.33, "secondsLeft": None}


def test_a_module_that_keeps_up_stays_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "edge_inference.ops.progress")
    share = Share(2)  # a camera at 1 frame/s: one or two frames in flight at any time
    m = monitor(share, MetricsRegistry())
    for t in range(1, 6):
        share.done += 30
        m.measure(30.0 * t)
    assert caplog.messages == []


def test_durations_read_like_a_person_writes_them() -> None:
    assert duration(12.4) == "12 s" and duration(250) == "4 min 10 s" and duration(5280) == "1 h 28 min"


def test_get_status_shows_the_backlog(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start(PROGRESS_INTERVAL_SECONDS="1")
    for i in range(3):
        frame(shares["input"] / f"{i}.jpg", seed=i)
    assert eventually(lambda: len(run.collector.results) == 3, 20)
    assert eventually(lambda: run.commands.status()["backlog"]["framesLeft"] == 0, 5)
    assert run.module.progress.is_alive()
