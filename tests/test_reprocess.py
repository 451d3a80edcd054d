"""`reprocess` of a frame whose archive move is still pending (control/reprocess.py): it waits for the move instead
of skipping the frame, and gives up, saying so, only after REPROCESS_WAIT_S."""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import logging
import threading
import time

import pytest

from edge_inference.control.reprocess import FrameReprocessor
from tests.test_pipeline import eventually, frame, model_path, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)


def test_reprocess_waits_for_a_pending_archive_move_then_takes_the_frame(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given a finished frame whose archive move cannot happen yet: a plain file stands where processed/ goes
    (shares["output"] / "processed").write_text("in the way")
    run = start(INPUT_DISPOSITION="archive")
    frame(shares["input"] / "line1" / "a.jpg")
    first = run.collector.wait_for(1)[0]
    claimed = shares["input"] / ".edge-inference" / "claims" / "r1" / "line1" / "a.jpg"
    assert eventually(lambda: run.commands.status()["inFlight"] == 0) and claimed.is_file()  # still claimed
    # when reprocess is asked for it while the move is pending, and the way is cleared two seconds later
    clear = threading.Timer(2.0, (shares["output"] / "processed").unlink)
    clear.start()
    t0 = time.monotonic()
    taken = run.commands.reprocess("line1/a.jpg")
    waited = time.monotonic() - t0
    clear.join()
    # then the method waited for the housekeeping to archive it, and took it: a second result, a new message id
    assert taken == 1 and waited >= 1.5
    again = run.collector.wait_for(2)[1]
    assert again.rel_path == "line1/a.jpg" and again.frame_id == first.frame_id + ".r1"
    assert eventually((shares["output"] / "processed" / "line1" / "a.jpg").is_file)


def test_reprocess_gives_up_on_a_move_that_stays_pending_and_says_so(  # type: ignore[no-untyped-def]
    start, shares, caplog: pytest.LogCaptureFixture
) -> None:
    (shares["output"] / "processed").write_text("in the way, for good")
    run = start(INPUT_DISPOSITION="archive")
    frame(shares["input"] / "b.jpg")
    run.collector.wait_for(1)
    assert eventually(lambda: run.commands.status()["inFlight"] == 0)
    reprocessor = FrameReprocessor(run.settings, run.pipeline, run.module.watcher)
    with caplog.at_level(logging.WARNING, "edge_inference.control.reprocess"):
        assert reprocessor.reprocess("b.jpg", wait=1.0) == 0
    assert "b.jpg still waits for its archive move after 1 s: not taken" in caplog.text
    time.sleep(0.5)
    assert len(run.collector.results) == 1
