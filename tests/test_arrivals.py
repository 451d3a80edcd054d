"""Frames cut short while their writer may still be at it: they wait, with no result, until they are final."""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inference.entities import FrameJob
from edge_inference.errors import FrameError
from edge_inference.share.arrivals import ArrivingFrames
from tests.test_pipeline import eventually, model_path, results_of, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)

TRUNCATED = FrameError(FrameError.CORRUPT, "truncated JPEG: the end-of-image marker is missing")


class Stat:
    """What the frame looks like where it waits (size, mtime_ns), changed by the test."""

    def __init__(self, size: int, mtime_ns: int) -> None:
        self.size, self.mtime_ns = size, mtime_ns

    def __call__(self, rel: str) -> os.stat_result:
        mtime = self.mtime_ns // 10**9
        seconds = self.mtime_ns / 1e9
        fields = (0o100644, 0, 0, 1, 0, 0, self.size, mtime, mtime, mtime, seconds, seconds, seconds)
        return os.stat_result((*fields, self.mtime_ns, self.mtime_ns, self.mtime_ns))


def job(size: int, mtime_ns: int) -> FrameJob:
    return FrameJob("cam/a.jpg", Path("/share/cam/a.jpg"), size, mtime_ns, "poll", time.monotonic())


def test_a_truncated_frame_waits_and_comes_back_once_its_writer_finished() -> None:
    stat = Stat(1000, 1)
    arrivals = ArrivingFrames(grace=30, settle=0.2, trust_mtime=False, stat=stat)
    assert arrivals.hold(job(1000, 1), TRUNCATED) and arrivals.waiting("cam/a.jpg")
    taken: list[FrameJob] = []
    assert arrivals.release_due(lambda j: taken.append(j) is None) == 0  # unchanged, grace not over: waits
    stat.size, stat.mtime_ns = 5000, 2  # the writer goes on, then stops
    arrivals.release_due(lambda j: taken.append(j) is None)
    time.sleep(0.25)
    assert arrivals.release_due(lambda j: taken.append(j) is None) == 1
    assert [(j.size, j.mtime_ns) for j in taken] == [(5000, 2)] and not arrivals.waiting("cam/a.jpg")


def test_a_frame_unchanged_for_the_grace_is_final_and_its_error_stands() -> None:
    stat = Stat(1000, 1)
    arrivals = ArrivingFrames(grace=0.3, settle=0.1, trust_mtime=False, stat=stat)
    assert arrivals.hold(job(1000, 1), TRUNCATED)
    time.sleep(0.35)
    taken: list[FrameJob] = []
    assert arrivals.release_due(lambda j: taken.append(j) is None) == 1
    assert not arrivals.hold(taken[0], TRUNCATED)  # decoded again, still truncated: now it fails


def test_only_cut_short_files_wait_and_a_trusted_old_mtime_is_final_at_once() -> None:
    arrivals = ArrivingFrames(grace=30, settle=0.2, trust_mtime=True, stat=Stat(1, 1))
    assert not arrivals.hold(job(1000, 1), FrameError(FrameError.NOT_AN_IMAGE, "text"))
    old = time.time_ns() - 60 * 10**9
    assert not arrivals.hold(job(1000, old), TRUNCATED)  # a local file untouched for a minute: no writer
    assert arrivals.hold(job(0, time.time_ns()), FrameError(FrameError.EMPTY, "empty"))
    assert not ArrivingFrames(0, 0.2, False, Stat(1, 1)).hold(job(1000, 1), TRUNCATED)  # grace 0: fail at once


def test_a_frame_completed_in_place_after_it_was_taken_gets_one_whole_result(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given a writer that wrote half a frame, closed it (so it was taken at once), and finishes it later
    run = start()
    whole = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (240, 320, 3), np.uint8))[1].tobytes()
    path = shares["input"] / "cam" / "late.jpg"
    path.parent.mkdir()
    path.write_bytes(whole[: len(whole) // 2])
    assert eventually(lambda: run.pipeline.arrivals.waiting("cam/late.jpg"), 10)
    claimed = shares["input"] / ".edge-inference" / "claims" / "r1" / "cam" / "late.jpg"
    with open(claimed if claimed.exists() else path, "ab") as fh:  # its handle followed the file into the claim
        fh.write(whole[len(whole) // 2 :])
    # then it is decoded again once unchanged, and gets exactly one result: whole, nothing failed or sent before
    assert eventually(lambda: len(run.collector.results) == 1, 15)
    time.sleep(1.5)
    assert [(r.rel_path, r.ok) for r in run.collector.results] == [("cam/late.jpg", True)]
    assert results_of(shares["output"])["cam/late.jpg"]["frame"]["width"] == 320
    assert not (shares["output"] / "failed").exists()
