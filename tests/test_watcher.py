"""The watcher on the real file system: complete frames only, once; temp names ignored; nothing missed."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_inference.share.mounts import filesystem_type, is_mount_point, mount_point_of, needs_polling, parse_mountinfo
from edge_inference.share.watcher import FrameWatcher, Offer, _EventHandler, is_frame_name

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """The intake stand-in: records what the watcher offers; can refuse (DEFER) for a while."""

    def __init__(self) -> None:
        self.offers: list[tuple[str, int, str]] = []
        self.defer = False
        self.event = threading.Event()

    def __call__(self, rel: str, st: os.stat_result, source: str) -> Offer:
        if self.defer:
            return Offer.DEFER
        self.offers.append((rel, st.st_size, source))
        self.event.set()
        return Offer.TAKEN

    def wait_for(self, count: int, timeout: float = 10) -> list[tuple[str, int, str]]:
        deadline = time.monotonic() + timeout
        while len(self.offers) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.offers


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def watch(tmp_path: Path, recorder: Recorder, no_thread_leaks: None) -> Iterator[tuple[Path, FrameWatcher]]:
    root = tmp_path / "input"
    watcher = FrameWatcher(root, recorder, mode="events", settle_seconds=0.4, rescan_interval=0)
    watcher.start()
    assert watcher.swept.wait(5)  # the start-up sweep is over: what follows is seen by inotify
    yield root, watcher
    watcher.stop()


def test_a_file_written_slowly_in_chunks_is_offered_once_and_complete(watch, recorder: Recorder) -> None:  # type: ignore[no-untyped-def]
    root, _ = watch
    path = root / "slow.jpg"
    with open(path, "wb") as fh:  # an SMB-like writer: chunks with pauses shorter than the settle window
        for _ in range(6):
            fh.write(b"x" * 10_000)
            fh.flush()
            time.sleep(0.15)
    offers = recorder.wait_for(1)
    time.sleep(0.8)
    assert offers == [("slow.jpg", 60_000, "events")]


def test_temp_and_hidden_names_are_ignored_until_renamed_into_place(watch, recorder: Recorder) -> None:  # type: ignore[no-untyped-def]
    root, _ = watch
    for name in (".hidden.jpg", "a.jpg.tmp", "b.part", "c.filepart", "~$d.jpg", "e.crdownload", "notes.txt"):
        (root / name).write_bytes(b"x" * 100)
    (root / "a.jpg.tmp").rename(root / "a.jpg")
    offers = recorder.wait_for(1)
    time.sleep(0.8)
    assert [o[0] for o in offers] == ["a.jpg"]


def test_nested_folders_keep_their_relative_paths(watch, recorder: Recorder) -> None:  # type: ignore[no-untyped-def]
    root, _ = watch
    (root / "line1" / "cam2").mkdir(parents=True)
    (root / "line1" / "cam2" / "0001.JPG").write_bytes(b"x" * 10)
    (root / "line2").mkdir()
    (root / "line2" / "0002.png").write_bytes(b"x" * 10)
    assert sorted(o[0] for o in recorder.wait_for(2)) == ["line1/cam2/0001.JPG", "line2/0002.png"]


def test_refused_frames_stay_candidates_and_are_offered_again(watch, recorder: Recorder) -> None:  # type: ignore[no-untyped-def]
    root, watcher = watch
    recorder.defer = True
    (root / "x.jpg").write_bytes(b"x" * 10)
    time.sleep(1.0)
    assert recorder.offers == [] and watcher.pending == 1
    recorder.defer = False
    assert [o[0] for o in recorder.wait_for(1)] == ["x.jpg"]


def test_backlog_is_found_at_start(tmp_path: Path, recorder: Recorder, no_thread_leaks: None) -> None:
    root = tmp_path / "input"
    (root / "old").mkdir(parents=True)
    for i in range(5):
        (root / "old" / f"{i}.jpg").write_bytes(b"x")
        os.utime(root / "old" / f"{i}.jpg", (time.time() - 60, time.time() - 60))
    watcher = FrameWatcher(root, recorder, mode="events", settle_seconds=5.0, rescan_interval=0)
    watcher.start()
    try:
        # files older than the settle window are taken at once, without waiting 5 s
        assert len(recorder.wait_for(5, timeout=2)) == 5
        assert {o[2] for o in recorder.offers} == {"scan"}
    finally:
        watcher.stop()


def test_polling_mode_finds_files_without_inotify(tmp_path: Path, recorder: Recorder, no_thread_leaks: None) -> None:
    root = tmp_path / "input"
    watcher = FrameWatcher(root, recorder, mode="poll", settle_seconds=0.2, poll_interval=0.2, rescan_interval=0)
    watcher.start()
    try:
        (root / "sub").mkdir()
        (root / "sub" / "p.jpg").write_bytes(b"x" * 50)
        assert [o[0] for o in recorder.wait_for(1)] == ["sub/p.jpg"]
    finally:
        watcher.stop()


def test_the_sweep_finds_what_events_missed(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, no_thread_leaks: None
) -> None:
    # An SMB/NFS share: other machines' writes raise no inotify event at all.
    monkeypatch.setattr(_EventHandler, "on_any_event", lambda self, event: None)
    root = tmp_path / "input"
    watcher = FrameWatcher(root, recorder, mode="events", settle_seconds=0.1, rescan_interval=0.3)
    watcher.start()
    try:
        (root / "missed.jpg").write_bytes(b"x" * 10)
        assert [o[0] for o in recorder.wait_for(1)] == ["missed.jpg"]
        assert recorder.offers[0][2] == "scan"
    finally:
        watcher.stop()


def test_frame_names() -> None:
    assert is_frame_name("a.JPG") and is_frame_name("b.tiff") and is_frame_name("c.webp")
    assert not is_frame_name(".a.jpg") and not is_frame_name("a.jpg.part") and not is_frame_name("a.gif")


MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 0:40 / /app/input ro,relatime - cifs //nas/frames rw,vers=3.1.1
41 22 0:41 / /app/output rw,relatime - nfs4 nas:/results rw
42 22 0:42 / /mnt/with\\040space rw - fuse.sshfs host:/x rw
"""


def test_network_and_fuse_mounts_are_polled() -> None:
    assert parse_mountinfo(MOUNTINFO)[3] == ("/mnt/with space", "fuse.sshfs")
    assert filesystem_type(Path("/app/input/line1"), MOUNTINFO) == "cifs"
    assert filesystem_type(Path("/app/output"), MOUNTINFO) == "nfs4"
    assert filesystem_type(Path("/mnt/with space/a"), MOUNTINFO) == "fuse.sshfs"
    assert filesystem_type(Path("/app/inputs"), MOUNTINFO) == "ext4"
    assert needs_polling("cifs") and needs_polling("nfs4") and needs_polling("fuse.sshfs")
    assert not needs_polling("ext4") and not needs_polling("overlay")


def test_a_mount_point_is_told_from_a_plain_folder() -> None:
    assert is_mount_point(Path("/app/input"), MOUNTINFO) and is_mount_point(Path("/mnt/with space"), MOUNTINFO)
    assert not is_mount_point(Path("/app/input/line1"), MOUNTINFO) and not is_mount_point(Path("/app"), MOUNTINFO)
    assert mount_point_of(Path("/app/input/line1"), MOUNTINFO) == Path("/app/input")
    assert mount_point_of(Path("/app/inputs"), MOUNTINFO) == Path("/")


def test_a_bind_mount_from_the_same_file_system_is_a_mount_point(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    source, point = tmp_path / "source", tmp_path / "point"
    source.mkdir()
    point.mkdir()
    assert not is_mount_point(point) and not os.path.ismount(point)
    subprocess.run(["mount", "--bind", str(source), str(point)], check=True)
    try:
        assert is_mount_point(point) and not os.path.ismount(point)  # same device: ismount cannot see it
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
    assert not is_mount_point(point)


def test_a_frame_intake_cannot_take_backs_off_alone_and_the_others_go_on(tmp_path: Path, no_thread_leaks: None) -> None:
    # given one frame whose claim keeps failing (RETRY) and one whose writer still holds it (BUSY)
    offers: list[str] = []

    def offer(rel: str, st: os.stat_result, source: str) -> Offer:
        offers.append(rel)
        return {"stuck.jpg": Offer.RETRY, "held.jpg": Offer.BUSY}.get(rel, Offer.TAKEN)

    root = tmp_path / "input"
    root.mkdir()
    for name in ("stuck.jpg", "held.jpg"):
        (root / name).write_bytes(b"x")
    watcher = FrameWatcher(root, offer, mode="events", settle_seconds=0.2, rescan_interval=0)
    watcher.start()
    try:
        for i in range(5):  # when good frames keep arriving behind them
            (root / f"good{i}.jpg").write_bytes(b"x")
            time.sleep(0.5)
        deadline = time.monotonic() + 5
        while len({o for o in offers if o.startswith("good")}) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop()
    # then every good frame was offered, the stuck one backed off (1 s, 2 s...) and the held one waited a settle
    # window between offers - none of them offered on every tick
    assert {o for o in offers if o.startswith("good")} == {f"good{i}.jpg" for i in range(5)}
    assert 2 <= offers.count("stuck.jpg") <= 3
    assert 3 <= offers.count("held.jpg") <= 14


def test_on_a_mount_that_caches_attributes_an_old_mtime_is_no_proof_of_a_finished_file(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, no_thread_leaks: None
) -> None:
    # given an SMB-like input share (attributes cached, a file's mtime kept at its first write until close)
    monkeypatch.setattr("edge_inference.share.watcher.settle_window", lambda path, settle: (1.0, False))
    root = tmp_path / "input"
    root.mkdir()
    (root / "open.jpg").write_bytes(b"x" * 100)
    os.utime(root / "open.jpg", (time.time() - 60, time.time() - 60))
    watcher = FrameWatcher(root, recorder, mode="poll", settle_seconds=0.1, poll_interval=0.1, rescan_interval=0)
    watcher.start()
    try:
        time.sleep(0.6)
        assert recorder.offers == []  # not taken on its old mtime: it must stay unchanged for the window first
        assert [o[0] for o in recorder.wait_for(1, timeout=3)] == ["open.jpg"]
    finally:
        watcher.stop()
