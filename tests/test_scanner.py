"""Polling that costs what changed (share/scanner.py, share/folder_index.py, share/candidates.py) on the real file
system: an idle poll lists no folder, a new frame is found in the folder that changed, kept frames are never
offered again, a backlog streams through a bounded table, and the full sweep finds what a poll cannot see."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_inference.share.folder_index import Folder
from edge_inference.share.scanner import Listing, ShareScanner
from edge_inference.share.watcher import BACKLOG_SWEEP_FACTOR, FrameWatcher, Offer

pytestmark = pytest.mark.timeout(60)


class Intake:
    """Intake's stand-in: takes every frame offered (or defers them all), and counts the offers."""

    def __init__(self) -> None:
        self.offers: list[str] = []
        self.defer = False

    def __call__(self, rel: str, st: os.stat_result, source: str) -> Offer:
        if self.defer:
            return Offer.DEFER
        self.offers.append(rel)
        return Offer.TAKEN


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every folder listing a scanner makes (the real listing runs; its folder is recorded)."""
    seen: list[str] = []
    real = ShareScanner.list_folder

    def spy(self: ShareScanner, folder: Folder, st: os.stat_result, source: str, *, check_versions: bool) -> Listing:
        seen.append(folder.rel)
        return real(self, folder, st, source, check_versions=check_versions)

    monkeypatch.setattr(ShareScanner, "list_folder", spy)
    yield seen


def tree(root: Path, folders: int, per_folder: int) -> list[str]:
    names = []
    for f in range(folders):
        folder = root / f"cam{f % 3}" / f"h{f:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            (folder / f"{i:04d}.jpg").write_bytes(b"x" * 100)
            names.append(f"cam{f % 3}/h{f:03d}/{i:04d}.jpg")
    return names


def watcher(root: Path, intake: Intake, *, keeps: bool = True, **kw: object) -> FrameWatcher:
    """A poll-mode watcher whose workers are not started: the tests drive sweep and poll themselves."""
    return FrameWatcher(root, intake, mode="poll", settle_seconds=0.0, keeps=keeps, **kw)  # type: ignore[arg-type]


def settle(w: FrameWatcher, intake: Intake) -> None:
    """Offer every due candidate now (what the settle thread does every tick)."""
    w.candidates.settle_once(intake, lambda: False)


def test_an_idle_poll_over_kept_frames_lists_no_folder_and_offers_nothing(tmp_path: Path, listings: list[str]) -> None:
    # given 600 kept frames in 30 nested folders, all offered once by the start-up sweep
    root = tmp_path / "input"
    names = tree(root, 30, 20)
    intake = Intake()
    w = watcher(root, intake)
    w.sweep()
    settle(w, intake)
    assert sorted(intake.offers) == sorted(names)
    time.sleep(w.scanner.hot_seconds + 0.1)  # past the window in which changed folders are listed again
    listings.clear()
    # when the share is polled again and again with nothing changed
    for _ in range(5):
        w.scanner.poll()
        settle(w, intake)
    # then no folder is listed (one stat per folder) and nothing is offered twice
    assert listings == []
    assert len(intake.offers) == len(names)
    assert w.index.known_files() == len(names)


def test_a_new_frame_is_found_by_the_next_poll_in_the_folder_that_changed(tmp_path: Path, listings: list[str]) -> None:
    root = tmp_path / "input"
    tree(root, 10, 5)
    intake = Intake()
    w = watcher(root, intake)
    w.sweep()
    settle(w, intake)
    time.sleep(w.scanner.hot_seconds + 0.1)
    listings.clear()
    # when one frame is renamed into a nested folder and a new folder with a frame appears
    (root / "cam1" / "h004" / ".new.jpg.tmp").write_bytes(b"y" * 10)
    os.replace(root / "cam1" / "h004" / ".new.jpg.tmp", root / "cam1" / "h004" / "new.jpg")
    (root / "cam2" / "fresh" / "deep").mkdir(parents=True)
    (root / "cam2" / "fresh" / "deep" / "f.png").write_bytes(b"z" * 10)
    w.scanner.poll()
    settle(w, intake)
    # then both are offered after one poll, and only the folders on their way were listed
    assert intake.offers[-2:] == ["cam1/h004/new.jpg", "cam2/fresh/deep/f.png"] or set(intake.offers[-2:]) == {
        "cam1/h004/new.jpg",
        "cam2/fresh/deep/f.png",
    }
    assert set(listings) == {"cam1/h004", "cam2", "cam2/fresh", "cam2/fresh/deep"}


def test_keep_mode_a_rewritten_frame_is_new_again_for_the_sweep(tmp_path: Path) -> None:
    root = tmp_path / "input"
    tree(root, 2, 3)
    intake = Intake()
    w = watcher(root, intake)
    w.sweep()
    settle(w, intake)
    offered = len(intake.offers)
    # a frame written again in place (same name, new content: its folder's mtime does not change)
    target = root / "cam0" / "h000" / "0001.jpg"
    target.write_bytes(b"new content, another size")
    w.sweep()
    settle(w, intake)
    assert intake.offers[offered:] == ["cam0/h000/0001.jpg"]


def test_after_a_restart_frames_the_ledger_finished_are_remembered_not_offered(tmp_path: Path) -> None:
    root = tmp_path / "input"
    names = tree(root, 4, 5)
    done = set(names[:15])
    intake = Intake()
    w = watcher(root, intake, finished=lambda items: {rel for rel, _st in items if rel in done})
    w.sweep()
    settle(w, intake)
    assert sorted(intake.offers) == sorted(set(names) - done)
    assert w.index.known_files() == len(names)


def test_a_backlog_streams_through_a_bounded_table(tmp_path: Path) -> None:
    # given 1,000 frames waiting and room for 100 candidates (a million and ten thousand, scaled down)
    root = tmp_path / "input"
    names = tree(root, 10, 100)
    intake = Intake()
    w = watcher(root, intake, keeps=False, max_candidates=100)
    # when the start-up sweep runs: it notes what fits and counts the rest
    report = w.sweep()
    assert w.pending == 100 and report.noted == 100 and report.unseen == 900
    assert w.frames_left == 1000
    # then the table never holds more than 100, and polls refill it as intake takes frames (they leave the share)
    largest = 0
    for _ in range(40):
        settle(w, intake)
        for rel in intake.offers:
            (root / rel).unlink(missing_ok=True)
        w.scanner.poll()
        largest = max(largest, w.pending)
        if len(intake.offers) == len(names):
            break
    assert largest <= 100
    assert sorted(intake.offers) == sorted(names)  # each frame once
    assert w.frames_left == 0


def test_a_name_that_comes_back_after_its_frame_was_taken_away_is_new(tmp_path: Path) -> None:
    # archive mode: the frame leaves the share when taken; `reprocess` copies it back with the same bytes and times
    root = tmp_path / "input"
    tree(root, 1, 2)
    intake = Intake()
    w = watcher(root, intake, keeps=False)
    w.sweep()
    settle(w, intake)
    path = root / "cam0" / "h000" / "0000.jpg"
    st = path.stat()
    data = path.read_bytes()
    path.unlink()  # claimed
    path.write_bytes(data)  # copied back, times kept
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    w.scanner.poll()
    settle(w, intake)
    assert intake.offers.count("cam0/h000/0000.jpg") == 2


def test_a_folder_whose_mtime_does_not_move_is_found_by_the_sweep_then_listed_at_every_poll(tmp_path: Path) -> None:
    # given a file system that does not keep folder mtimes (an object-store FUSE mount): simulated by putting the
    # folder's mtime back after each new frame
    root = tmp_path / "input"
    tree(root, 1, 1)
    folder = root / "cam0" / "h000"
    intake = Intake()
    w = watcher(root, intake)
    w.sweep()
    settle(w, intake)
    time.sleep(w.scanner.hot_seconds + 0.1)

    def sneak(name: str) -> None:
        st = folder.stat()
        (folder / name).write_bytes(b"x")
        os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))

    sneak("a.jpg")
    w.scanner.poll()
    settle(w, intake)
    assert "cam0/h000/a.jpg" not in intake.offers  # a poll cannot see it
    w.sweep()  # the backstop does, and marks the folder
    settle(w, intake)
    assert "cam0/h000/a.jpg" in intake.offers
    sneak("b.jpg")
    w.scanner.poll()  # from now on every poll lists that folder
    settle(w, intake)
    assert "cam0/h000/b.jpg" in intake.offers


def test_a_second_change_within_the_mtime_granularity_is_seen_while_the_folder_is_hot(tmp_path: Path) -> None:
    # a file system with one-second mtimes: two frames in the same second leave the folder's mtime as it was
    root = tmp_path / "input"
    tree(root, 1, 1)
    folder = root / "cam0" / "h000"
    intake = Intake()
    w = watcher(root, intake)
    w.sweep()
    settle(w, intake)
    (folder / "first.jpg").write_bytes(b"x")
    w.scanner.poll()
    settle(w, intake)
    st = folder.stat()
    (folder / "second.jpg").write_bytes(b"x")
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime as after the first
    w.scanner.poll()
    settle(w, intake)
    assert {"cam0/h000/first.jpg", "cam0/h000/second.jpg"} <= set(intake.offers)


def test_deferred_frames_stay_candidates_and_cost_one_look_per_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # intake full (DEFER): each tick looks at one candidate, not at all of them
    root = tmp_path / "input"
    tree(root, 2, 50)
    intake = Intake()
    intake.defer = True
    w = watcher(root, intake, keeps=False)
    w.sweep()
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: str, *args: object, **kw: object) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **kw)  # type: ignore[arg-type]

    settle(w, intake)  # first looks: every candidate once
    monkeypatch.setattr("edge_inference.share.candidates.os.stat", counting_stat)
    for _ in range(10):
        settle(w, intake)
    assert len(stats) <= 10 and w.pending == 100
    intake.defer = False
    settle(w, intake)
    assert len(intake.offers) == 100


def test_candidates_waiting_to_settle_are_skipped_by_listings_without_asking_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given 200 candidates that intake cannot take yet (full): they wait in the table, their folder changes again
    root = tmp_path / "input"
    tree(root, 2, 100)
    intake = Intake()
    intake.defer = True
    w = watcher(root, intake)
    w.sweep()
    settle(w, intake)
    asked: list[str] = []
    real_has = FrameWatcher.has

    def spy(self: FrameWatcher, rel_path: str) -> bool:
        asked.append(rel_path)
        return real_has(self, rel_path)

    monkeypatch.setattr(FrameWatcher, "has", spy)
    (root / "cam0" / "h000" / "new.jpg").write_bytes(b"n" * 10)
    # when the folder is listed again (a poll) and the whole share swept
    w.scanner.poll()
    w.sweep()
    # then only the new name is looked up in the table: the waiting ones are known to the folder index
    assert asked == ["cam0/h000/new.jpg"]
    assert w.pending == 201
    intake.defer = False
    settle(w, intake)
    assert len(intake.offers) == 201 and len(set(intake.offers)) == 201


def test_a_candidate_removed_before_it_settled_is_new_when_its_name_comes_back(tmp_path: Path) -> None:
    # keep mode: a camera writes a frame, deletes it before the settle window ends, then writes it again
    root = tmp_path / "input"
    tree(root, 1, 1)
    intake = Intake()
    w = watcher(root, intake)
    w.sweep()
    settle(w, intake)
    path = root / "cam0" / "h000" / "late.jpg"
    path.write_bytes(b"first")
    w.scanner.poll()
    assert w.pending == 1
    path.unlink()
    settle(w, intake)  # the candidate is gone: forgotten, in the table and in the folder index
    assert w.pending == 0 and "cam0/h000/late.jpg" not in intake.offers
    path.write_bytes(b"second, whole")
    w.scanner.poll()
    settle(w, intake)
    assert intake.offers.count("cam0/h000/late.jpg") == 1


def test_while_a_backlog_waits_for_room_the_next_sweep_comes_later(tmp_path: Path) -> None:
    # the polls refill the table folder by folder; a full sweep every RESCAN_INTERVAL would only count it again
    root = tmp_path / "input"
    tree(root, 2, 30)
    intake = Intake()
    w = watcher(root, intake, keeps=False, max_candidates=10, rescan_interval=30.0)
    start = time.monotonic()
    w._scan_tick()  # the start-up sweep: 50 frames wait for room
    assert w.last_sweep is not None and w.last_sweep.unseen == 50
    assert w._next_sweep >= start + 30.0 * BACKLOG_SWEEP_FACTOR
    (tmp_path / "empty").mkdir()
    w2 = watcher(tmp_path / "empty", intake, rescan_interval=30.0)
    start = time.monotonic()
    w2._scan_tick()  # nothing waits: the sweep's own interval
    assert start + 29.0 <= w2._next_sweep <= time.monotonic() + 30.0


def test_a_refill_lists_only_as_many_waiting_folders_as_the_table_has_room_for(
    tmp_path: Path, listings: list[str]
) -> None:
    # given 1,000 frames in 10 folders and room for 100: the sweep notes one folder's frames, nine folders wait
    root = tmp_path / "input"
    tree(root, 10, 100)
    intake = Intake()
    w = watcher(root, intake, keeps=False, max_candidates=100)
    w.sweep()
    settle(w, intake)
    for rel in intake.offers:
        (root / rel).unlink()  # taken off the share
    time.sleep(w.scanner.hot_seconds + 0.1)  # past the window in which listed folders are listed again
    listings.clear()
    # when a poll refills the emptied table
    w.scanner.poll()
    # then it stops listing waiting folders once the table is full again: the folder that changed, and one more
    assert w.pending == 100
    assert len(listings) == 2, listings
