"""The local twin file (LOCAL_TWIN_PATH): desired properties from a watched JSON file, validated and applied exactly
like twin patches, acknowledged in `<name>.reported.json` beside it; a file that cannot be read is one line and the
settings in force stay. The last test runs the module as `make run` does and changes the next frame with it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_inference.iot.local_twin import MAX_BYTES, LocalTwinFile, reported_path
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from tests.process_support import wait_for_line
from tools.drop_frames import write_atomically
from tools.module_process import module_process_env
from tools.synthetic import encode_jpeg, generate_frame

pytestmark = pytest.mark.timeout(60)


class Twin:
    """A LocalTwinFile on tmp_path whose worker never ticks by itself: the test calls `check()`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "twin.json"
        self.live = LiveSettings(TwinSettings())
        self.file = LocalTwinFile(
            self.path,
            self.live,
            MetricsRegistry(),
            lambda: {"provider": "CPUExecutionProvider"},
            lambda: {"frames": {"ok": 1}},
            interval=3600,
        )

    def write(self, content: str | bytes) -> None:
        data = content.encode() if isinstance(content, str) else content
        write_atomically(self.path, data)

    def check_twice(self) -> None:
        """A change is read once it has held still for one check."""
        self.file.check()
        self.file.check()

    def reported(self) -> dict[str, Any]:
        return json.loads(reported_path(self.path).read_text())  # type: ignore[no-any-return]


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[Twin]:
    t = Twin(tmp_path)
    yield t
    t.file.stop()


def test_the_reported_file_sits_beside_the_twin_file() -> None:
    assert reported_path(Path("data/twin.json")) == Path("data/twin.reported.json")
    assert reported_path(Path("/x/settings")) == Path("/x/settings.reported.json")


def test_a_change_is_validated_applied_and_acknowledged_beside_it(twin: Twin) -> None:
    # given a twin file read at start
    twin.write('{"confidenceThreshold": 0.6}')
    twin.file.start()
    assert twin.live.current().confidence_threshold == 0.6
    start = twin.reported()
    assert start["confidenceThreshold"] == {"value": 0.6, "ac": 200, "av": 1, "ad": "applied"}
    assert start["saveAnnotated"] == {"value": False, "ac": 203, "av": 1, "ad": "boot value"}
    assert start["runtime"] == {"provider": "CPUExecutionProvider"}
    # when it changes
    twin.write('{"confidenceThreshold": 0.8, "saveAnnotated": true, "classes": ["dent"]}')
    twin.file.check()
    assert twin.live.current().confidence_threshold == 0.6  # not read while it may still be being written
    twin.file.check()
    # then the new values are live and acknowledged as the next desired version
    live = twin.live.current()
    assert (live.confidence_threshold, live.save_annotated, live.classes) == (0.8, True, ("dent",))
    reported = twin.reported()
    assert reported["saveAnnotated"] == {"value": True, "ac": 200, "av": 2, "ad": "applied"}
    assert reported["classes"] == {"value": ["dent"], "ac": 200, "av": 2, "ad": "applied"}
    assert reported["iouThreshold"]["ac"] == 203  # the document keeps what was reported before
    assert not list(twin.path.parent.glob(".*.tmp"))  # written atomically, no temp file left


def test_an_invalid_value_is_refused_while_the_valid_ones_of_the_file_apply(
    twin: Twin, caplog: pytest.LogCaptureFixture
) -> None:
    twin.file.start()
    twin.write('{"confidenceThreshold": 7, "maxDetections": 10, "colour": "red"}')
    with caplog.at_level(logging.WARNING):
        twin.check_twice()
    live = twin.live.current()
    assert live.confidence_threshold == 0.5 and live.max_detections == 10
    reported = twin.reported()
    assert reported["confidenceThreshold"]["ac"] == 400 and reported["confidenceThreshold"]["value"] == 0.5
    assert "expected a number from 0 to 1, got 7" in reported["confidenceThreshold"]["ad"]
    assert reported["maxDetections"] == {"value": 10, "ac": 200, "av": 1, "ad": "applied"}
    assert reported["colour"] == {"value": None, "ac": 400, "av": 1, "ad": "unknown property"}
    assert "confidenceThreshold: refused: expected a number from 0 to 1, got 7" in caplog.text


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"saveAnnotated": tru', "is not valid JSON (Expecting value at line 1 column 19)"),
        ("", "is empty: write one JSON object of desired properties"),
        ('["saveAnnotated"]', "must hold one JSON object of desired properties"),
        (b'{"classes": ["\xff"]}', "is not UTF-8 text"),
        ("[" * 100_000 + "]" * 100_000, "cannot be read as JSON (RecursionError)"),
        (" " * (MAX_BYTES + 1), "is larger than 1 MiB"),
    ],
    ids=["bad-json", "empty", "a-list", "not-utf8", "too-deep", "too-big"],
)
def test_a_file_that_cannot_be_read_is_one_line_and_the_settings_in_force_stay(
    twin: Twin, caplog: pytest.LogCaptureFixture, content: str | bytes, said: str
) -> None:
    twin.write('{"saveAnnotated": true}')
    twin.file.start()
    twin.write(content)
    with caplog.at_level(logging.INFO, logger="edge_inference"):
        twin.check_twice()
        twin.check_twice()  # looked at again, unchanged: not said again
    lines = [r for r in caplog.records if r.name == "edge_inference.iot.local_twin"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert said in lines[0].getMessage() and "the settings in force stay" in lines[0].getMessage()
    assert twin.live.current().save_annotated is True
    # and once it is fixed, it applies
    twin.write('{"saveAnnotated": false}')
    twin.check_twice()
    assert twin.live.current().save_annotated is False


def test_a_missing_file_reports_boot_values_and_applies_once_written(
    twin: Twin, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="edge_inference"):
        twin.file.start()
    assert "no such file yet; write desired properties into it" in caplog.text
    assert {ack["ac"] for key, ack in twin.reported().items() if key != "runtime"} == {203}
    twin.write('{"paused": true}')
    twin.check_twice()
    assert twin.live.current().paused is True
    os.unlink(twin.path)
    with caplog.at_level(logging.INFO, logger="edge_inference"):
        twin.check_twice()
    assert "was removed; the settings in force stay" in caplog.text
    assert twin.live.current().paused is True


def test_stats_are_reported_when_due(twin: Twin) -> None:
    twin.file.stats_interval = 0.0
    twin.file.start()
    twin.file.check()
    assert twin.reported()["stats"] == {"frames": {"ok": 1}}


@pytest.mark.timeout(90)
def test_the_module_applies_a_twin_file_change_to_the_next_frame_and_writes_the_ack(tmp_path: Path) -> None:
    # given the module as `make run` runs it (the bundled demo model), with the reduced JPEG decode on
    folders = {name: tmp_path / name for name in ("input", "output", "state")}
    twin_path, log = tmp_path / "twin.json", tmp_path / "module.log"
    env = module_process_env(
        **{f"{k.upper()}_DIR": str(v) for k, v in folders.items()},
        LOCAL_TWIN_PATH=str(twin_path),
        JPEG_REDUCED_DECODE="true",  # a frame to annotate is decoded whole all the same
        HTTP_PORT="0",
        METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_inference"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        wait_for_line(log, "ready (CPUExecutionProvider, local mode)", proc, 60)
        # when the twin file asks for annotated frames and a stricter threshold
        write_atomically(twin_path, b'{"saveAnnotated": true, "confidenceThreshold": 0.8}')
        reported = reported_path(twin_path)
        deadline = time.monotonic() + 20
        while '"av": 1' not in (reported.read_text() if reported.exists() else ""):
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        # and the next 1920x1080 frame arrives
        image, _defects = generate_frame(np.random.default_rng(3), 1920, 1080)
        frame = folders["input"] / "next.jpg"
        write_atomically(frame, encode_jpeg(image, 90))
        result_file = folders["output"] / "results" / "next.jpg.json"
        wait_for_line(log, "next.jpg: ", proc, 30)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # then that frame used the new settings, its annotated copy is full size, and the acks say so
    result = json.loads(result_file.read_text())
    assert result["thresholds"]["confidence"] == 0.8
    assert all(d["confidence"] >= 0.8 for d in result["detections"])
    annotated = cv2.imread(str(folders["output"] / "annotated" / "next.jpg"))
    assert annotated is not None and annotated.shape == (1080, 1920, 3)
    acks = json.loads(reported.read_text())
    assert acks["saveAnnotated"] == {"value": True, "ac": 200, "av": 1, "ad": "applied"}
    assert acks["confidenceThreshold"] == {"value": 0.8, "ac": 200, "av": 1, "ad": "applied"}
    assert acks["runtime"]["provider"] == "CPUExecutionProvider"
    console = log.read_text()
    assert f"next.jpg: {result['count']} detection" in console  # the console's line for the frame
