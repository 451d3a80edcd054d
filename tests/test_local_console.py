"""Local mode's console: one readable line per frame (failures at WARNING with their code and reason), and a file the
module will never take named once."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from edge_inference.entities import Classification, ClassScore, FrameResult
from edge_inference.ops.console import FrameConsole, frame_line
from edge_inference.share.watcher import TAKEN_EXTENSIONS, FrameWatcher, Offer
from tests.iot_fakes import make_result

pytestmark = pytest.mark.timeout(30)


def test_a_frame_line_names_the_path_the_count_the_best_labels_and_the_time() -> None:
    result = make_result(detections=[("dent", 0.61), ("scratch", 0.934), ("dent", 0.88)])
    assert frame_line(result) == "line1/cam2/0001.jpg: 3 detections (scratch 0.93, dent 0.88 x2) in 10 ms"
    assert (
        frame_line(make_result(detections=[("spot", 0.5)])) == "line1/cam2/0001.jpg: 1 detection (spot 0.50) in 10 ms"
    )
    assert frame_line(make_result()) == "line1/cam2/0001.jpg: 0 detections in 10 ms"


def test_a_frame_line_names_at_most_three_labels() -> None:
    result = make_result(detections=[("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6), ("e", 0.95)])
    assert frame_line(result).endswith("5 detections (e 0.95, a 0.90, b 0.80, +2 more labels) in 10 ms")


def test_a_classifier_frame_line_names_its_best_three_classes() -> None:
    scores = tuple(
        ClassScore(label, i, p)
        for i, (label, p) in enumerate([("ok", 0.966), ("dent", 0.02), ("a", 0.01), ("b", 0.004)])
    )
    result = replace(make_result(), classification=Classification(scores[0], scores))
    assert frame_line(result) == "line1/cam2/0001.jpg: classified ok 0.97, dent 0.02, a 0.01 in 10 ms"


def test_a_failed_frame_line_gives_its_code_and_reason() -> None:
    result = make_result(
        rel_path="bad\udcff.jpg", error={"code": "corrupt_image", "message": "corrupt JPEG image: premature end"}
    )
    assert frame_line(result) == "bad\\xff.jpg: failed corrupt_image: corrupt JPEG image: premature end"


class Collector:
    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.groups = 0

    def on_result(self, result: FrameResult) -> None:
        self.results.append(result)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        self.groups += 1
        yield


def test_the_console_hands_every_result_on_then_logs_its_line(caplog: pytest.LogCaptureFixture) -> None:
    inner = Collector()
    console = FrameConsole(inner)
    ok, failed = make_result(detections=[("dent", 0.9)]), make_result(error={"code": "empty_file", "message": "empty"})
    with caplog.at_level(logging.INFO, logger="edge_inference.ops.console"), console.group():
        console.on_result(ok)
        console.on_result(failed)
    assert inner.results == [ok, failed] and inner.groups == 1
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, frame_line(ok)),
        (logging.WARNING, "line1/cam2/0001.jpg: failed empty_file: empty"),
    ]


class Offers:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.seen = threading.Event()

    def __call__(self, rel_path: str, _st: os.stat_result, _source: str) -> Offer:
        self.paths.append(rel_path)
        self.seen.set()
        return Offer.TAKEN


def test_a_file_the_module_never_takes_is_named_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # given a share holding a text file from before the start, and a temp file of a writer
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".0001.jpg.part").write_bytes(b"half")
    offers = Offers()
    watcher = FrameWatcher(tmp_path, offers, mode="events", settle_seconds=0.05, rescan_interval=0)
    with caplog.at_level(logging.WARNING, logger="edge_inference.share.watcher"):
        watcher.start()
        try:
            # when a raw frame and an image arrive, and the share is swept again
            (tmp_path / "cam").mkdir()
            (tmp_path / "cam" / "0002.raw").write_bytes(b"\0" * 64)
            (tmp_path / "cam" / "0003.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 64)
            assert offers.seen.wait(10)
            deadline = time.monotonic() + 5
            while "0002.raw" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            watcher.sweep()
            watcher.sweep()
        finally:
            watcher.stop()
    # then the image was offered, each other file named once with the extensions that are taken, the temp file never
    assert offers.paths == ["cam/0003.jpg"]
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_inference.share.watcher"]  # not watchdog's
    assert lines.count(f"ignoring notes.txt: not an image file name (frames end in {TAKEN_EXTENSIONS})") == 1
    assert lines.count(f"ignoring cam/0002.raw: not an image file name (frames end in {TAKEN_EXTENSIONS})") == 1
    assert len(lines) == 2, lines
    assert stat.S_ISREG((tmp_path / "notes.txt").stat().st_mode)  # left where it is
