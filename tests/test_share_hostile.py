"""Hostile and odd things on the shares (issue 18, items 3-8): one stuck frame never blocks another, output paths
never clash, and no file operation reaches outside the shares - with real symlinks, real mounts and the real
pipeline. Every test ends with the module alive and a good frame processed."""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_inference.share import share_fs
from edge_inference.share.claims import ClaimArea
from tests.test_pipeline import Running, eventually, frame, model_path, results_of, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)

SECRET = b"[secret]\npassword=hunter2\n"


def good_frames_go_through(run: Running, inp: Path, names: list[str], timeout: float = 15) -> None:
    for i, name in enumerate(names):
        frame(inp / name, seed=i)
    wanted = set(names)
    assert eventually(lambda: wanted <= {r.rel_path for r in run.collector.results}, timeout), (
        f"good frames not processed: {wanted - {r.rel_path for r in run.collector.results}}"
    )
    assert not run.pipeline.stage_death() and run.module.watcher.error is None and run.module.watcher.alive()


def outside_folder(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "config.ini").write_bytes(SECRET)
    frame(outside / "f.jpg", seed=9)
    return outside


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system (a real tmpfs mount)."""
    point = tmp_path / "other-fs"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(1 for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage())


# -- item 3: one stuck frame never blocks another ------------------------------------------------------------------
def test_a_frame_in_a_folder_the_module_may_not_modify_waits_alone(start, shares, caplog) -> None:  # type: ignore[no-untyped-def]
    inp = shares["input"]
    frame(inp / "locked" / "a.jpg")
    subprocess.run(["chattr", "+i", str(inp / "locked")], check=True)  # root too may not rename out of it
    try:
        run = start()
        with caplog.at_level(logging.WARNING):
            good_frames_go_through(run, inp, ["g1.jpg", "g2.jpg", "g3.jpg"])
            time.sleep(2.5)  # several back-off rounds
        assert (inp / "locked" / "a.jpg").is_file()
        assert warnings_about(caplog, "locked/a.jpg") == 1  # said once, not every tick
    finally:
        subprocess.run(["chattr", "-i", str(inp / "locked")], check=False)
    assert eventually(lambda: "locked/a.jpg" in {r.rel_path for r in run.collector.results}, 20)  # then it goes


def test_a_path_near_path_max_neither_blocks_nor_is_lost(start, shares) -> None:  # type: ignore[no-untyped-def]
    # the claim-area path is 27 bytes longer than the frame's: with whole paths the claim was ENAMETOOLONG (and
    # so was the result's path); folder by folder, neither is
    inp = shares["input"]
    room = 4085 - len(os.fsencode(str(inp))) - 1  # the frame's own path: 4085 bytes, under PATH_MAX (4096)
    folders = "/".join(["d" * 200] * ((room - 10) // 201))  # and its own name between 6 and 206 bytes
    rel = f"{folders}/{'n' * (room - len(folders) - 5)}.jpg"
    assert len(os.fsencode(str(inp / rel))) == 4085
    run = start()
    (inp / rel).parent.mkdir(parents=True)
    folder = os.open(inp / rel.rpartition("/")[0], os.O_RDONLY | os.O_DIRECTORY)
    try:  # the camera renames a finished file into place (its own temp path would be too long here)
        os.rename(frame(shares["state"] / "f.jpg"), rel.rpartition("/")[2], dst_dir_fd=folder)
    finally:
        os.close(folder)
    good_frames_go_through(run, inp, ["g1.jpg", "g2.jpg"])
    assert eventually(lambda: rel in {r.rel_path for r in run.collector.results}, 10)


def test_a_name_clash_in_the_claim_area_waits_alone(start, shares, caplog) -> None:  # type: ignore[no-untyped-def]
    # given `p.jpg` stuck in the claim area (a FIFO nobody can finish), a frame `p.jpg/w.jpg` cannot be claimed
    inp = shares["input"]
    stuck = inp / ".edge-inference" / "claims" / "r1" / "p.jpg"
    stuck.parent.mkdir(parents=True)
    os.mkfifo(stuck)
    frame(inp / "p.jpg" / "w.jpg")
    run = start()
    with caplog.at_level(logging.WARNING):
        good_frames_go_through(run, inp, ["g1.jpg", "g2.jpg", "g3.jpg"])
        time.sleep(2.5)
    assert (inp / "p.jpg" / "w.jpg").is_file() and warnings_about(caplog, "p.jpg/w.jpg") == 1


def test_a_symlinked_folder_on_another_file_system_is_never_taken_and_blocks_nothing(  # type: ignore[no-untyped-def]
    start, shares, tmpfs, caplog
) -> None:
    inp = shares["input"]
    frame(tmpfs / "x.jpg")
    (inp / "link").symlink_to(tmpfs)
    run = start()
    with caplog.at_level(logging.WARNING):
        assert run.module.watcher.note(str(inp / "link" / "x.jpg"), complete=True)  # as an event would name it
        assert run.commands.enqueue_path("link/x.jpg", "fileEvent") is False  # as ASE fileEvents would
        good_frames_go_through(run, inp, ["g1.jpg", "g2.jpg"])
        time.sleep(1.0)
    assert (tmpfs / "x.jpg").is_file() and "link/x.jpg" not in results_of(shares["output"])
    assert warnings_about(caplog, "symlink") >= 1


# -- item 4: output paths never clash ------------------------------------------------------------------------------
@pytest.mark.parametrize("folder_first", [True, False])
def test_a_file_and_a_folder_that_map_to_one_result_name_both_get_results(start, shares, folder_first) -> None:  # type: ignore[no-untyped-def]
    inp, out = shares["input"], shares["output"]
    run = start()
    order = [inp / "x.jpg.json" / "y.jpg", inp / "x.jpg"]
    for done, path in enumerate(order if folder_first else order[::-1], start=1):
        frame(path)  # one after the other: the second meets the first's output already there
        assert eventually(lambda done=done: len(run.collector.results) >= done, 10)
    assert eventually(lambda: {r.rel_path for r in run.collector.results} == {"x.jpg", "x.jpg.json/y.jpg"}, 15)
    assert json.loads((out / "results" / "x.jpg.json").read_text())["frame"]["path"] == "x.jpg"
    nested = out / "results" / "x.jpg.json~dir" / "y.jpg.json"
    assert json.loads(nested.read_text())["frame"]["path"] == "x.jpg.json/y.jpg"
    assert not run.pipeline.gate.blocked  # never paused for it
    good_frames_go_through(run, inp, ["g1.jpg"])


def test_an_archived_folder_and_file_of_one_name_both_reach_processed(start, shares) -> None:  # type: ignore[no-untyped-def]
    inp, out = shares["input"], shares["output"]
    run = start()
    frame(inp / "p.jpg" / "w.jpg")
    assert eventually((out / "processed" / "p.jpg~dir" / "w.jpg").is_file, 10)
    (inp / "p.jpg").rmdir()  # the camera moves on: the same name as a file
    frame(inp / "p.jpg", seed=1)
    assert eventually((out / "processed" / "p.jpg").is_file, 10)
    assert eventually(lambda: not [p for p in (inp / ".edge-inference" / "claims").rglob("*.jpg")], 5)  # none stuck
    good_frames_go_through(run, inp, ["g1.jpg"])


def test_annotated_frames_of_one_stem_never_overwrite_each_other(start, shares) -> None:  # type: ignore[no-untyped-def]
    inp, out = shares["input"], shares["output"]
    run = start()
    run.module.live.update(save_annotated=True)
    frame(inp / "x.jpg")
    frame(inp / "x.png")
    frame(inp / "x.png.jpg")
    annotated = out / "annotated"
    names = {"x.jpg", "x.png.jpg", "x.png.jpg.jpg"}
    assert eventually(lambda: annotated.is_dir() and {p.name for p in annotated.iterdir()} == names, 15)


# -- items 5-8: nothing outside the shares is moved, copied, read or written ---------------------------------------
def test_a_symlink_in_the_claim_area_is_never_adopted(start, shares, tmp_path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    inp = shares["input"]
    outside = outside_folder(tmp_path)
    (tmpfs / "id_rsa").write_bytes(SECRET)
    claims = inp / ".edge-inference" / "claims"
    claims.mkdir(parents=True)
    (claims / "evil").symlink_to(outside)  # a silent "replica" that is a link out of the share
    (claims / "evil-mount").symlink_to(tmpfs)  # one on another file system (EXDEV)
    stale = claims / "gone"  # and a real silent replica holding a link to a secret beside a real frame
    frame(stale / "cam" / "ok.jpg")
    (stale / "cam" / "key.jpg").symlink_to(outside / "config.ini")
    past = time.time() - 3600
    for entry in (stale, stale / "cam"):
        os.utime(entry, (past, past))
    run = start(CLAIM_STALE_SECONDS="5")
    assert eventually(lambda: "cam/ok.jpg" in {r.rel_path for r in run.collector.results}, 15)  # adopted, done
    assert (outside / "config.ini").read_bytes() == SECRET and (outside / "f.jpg").is_file()
    assert (tmpfs / "id_rsa").read_bytes() == SECRET
    assert (stale / "cam" / "key.jpg").is_symlink()  # left alone, not moved
    failed = shares["output"] / "failed"
    assert not failed.exists() or not [p for p in failed.rglob("*") if p.is_file()]
    good_frames_go_through(run, inp, ["g1.jpg"])


def test_a_file_event_through_a_symlinked_folder_moves_nothing(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edge_inference.iot.file_events import parse_file_events

    inp = shares["input"]
    outside = outside_folder(tmp_path)
    (inp / "link").symlink_to(outside)
    run = start()
    body = json.dumps([{"ChangeType": "Created", "ShareRelativeFilePath": "\\link\\f.jpg", "ShareName": "input"}])
    for rel in parse_file_events(body.encode()):
        assert run.commands.enqueue_path(rel, "fileEvent") is False
    time.sleep(1.0)
    assert (outside / "f.jpg").is_file() and not (shares["output"] / "processed").exists()
    good_frames_go_through(run, inp, ["g1.jpg"])


def test_a_folder_swapped_for_a_symlink_while_its_frame_settles_moves_nothing(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inp = shares["input"]
    outside = outside_folder(tmp_path)
    run = start(SETTLE_SECONDS="1.0")
    (inp / "cam").mkdir()
    with open(inp / "cam" / "f.jpg", "wb") as writer:  # written in place, still open: the frame is settling
        writer.write(frame(tmp_path / "bytes.jpg").read_bytes())
        writer.flush()
        assert eventually(lambda: run.module.watcher.pending == 1, 5)
        (inp / "cam").rename(inp / "cam.real")  # swap its folder for a link out of the share
        (inp / "cam").symlink_to(outside)
    time.sleep(2.5)
    assert (outside / "f.jpg").is_file() and (outside / "config.ini").read_bytes() == SECRET
    assert "cam/f.jpg" not in {r.rel_path for r in run.collector.results}  # the outside file was never taken
    assert eventually(lambda: "cam.real/f.jpg" in {r.rel_path for r in run.collector.results}, 10)  # the real one is
    good_frames_go_through(run, inp, ["g1.jpg"])


def test_a_claim_folder_swapped_for_a_symlink_is_never_read_through(tmp_path: Path) -> None:
    # given a claimed frame whose claim-area folder is then swapped for a link to a folder outside
    inp, out = tmp_path / "in", tmp_path / "out"
    frame(inp / "cam" / "f.jpg")
    claims = ClaimArea(inp, out, "r1", "archive", 300)
    claims.prepare()
    assert claims.claim("cam/f.jpg") is not None
    outside = outside_folder(tmp_path)
    (claims.own / "cam").rename(tmp_path / "moved-away")
    (claims.own / "cam").symlink_to(outside)
    # then reading or disposing of it never reaches the outside file
    with pytest.raises(share_fs.OutsideShare), claims.readable("cam/f.jpg"):
        pass
    with pytest.raises(share_fs.OutsideShare):
        claims.dispose("cam/f.jpg", ok=True)
    assert (outside / "f.jpg").is_file() and not (out / "processed" / "cam" / "f.jpg").exists()


def test_reprocess_never_writes_through_a_link_nor_over_a_waiting_frame(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inp, out = shares["input"], shares["output"]
    outside = tmp_path / "outside"
    outside.mkdir()
    run = start()
    frame(inp / "d" / "a.jpg")
    frame(inp / "w.jpg", seed=1)
    assert eventually(
        lambda: (out / "processed" / "d" / "a.jpg").is_file() and (out / "processed" / "w.jpg").is_file(), 10
    )
    # given the input folder `d` is now a link out of the share, and a newer `w.jpg` waits on the share
    assert eventually(lambda: not (inp / "d").exists() or not any((inp / "d").iterdir()), 5)
    if (inp / "d").exists():
        (inp / "d").rmdir()
    (inp / "d").symlink_to(outside)
    run.commands.pause()
    newer = frame(inp / "w.jpg", seed=2).read_bytes()
    # when every finished frame is reprocessed
    run.commands.reprocess("*")
    # then nothing was written outside, and the waiting frame is the camera's, byte for byte
    assert list(outside.iterdir()) == [] and (inp / "w.jpg").read_bytes() == newer
    run.commands.resume()
    assert eventually(lambda: json.loads((out / "results" / "w.jpg.json").read_text())["frame"]["sha256"] != "", 10)
    good_frames_go_through(run, inp, ["g1.jpg"])
