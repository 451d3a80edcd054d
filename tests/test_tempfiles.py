"""Temp files: names, and the clean-up of a failed write whose share went away."""

from __future__ import annotations

import os
from pathlib import Path

from edge_inference.share import tempfiles


def test_a_temp_name_is_hidden_tagged_and_fits_name_max(tmp_path: Path) -> None:
    tempfiles.set_tag("replica-7")
    try:
        tmp = tempfiles.temp_path(tmp_path / ("x" * 250 + ".json"))
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        assert ".replica-7." in tmp.name and len(os.fsencode(tmp.name)) <= 255
    finally:
        tempfiles.set_tag("ei")


def test_a_temp_file_behind_a_vanished_folder_is_removed_once_it_is_back(tmp_path: Path) -> None:
    # given a failed write left its temp file in a folder that is away (as under an unmounted share)
    share, away = tmp_path / "share", tmp_path / "away"
    tmp = share / "results" / ".a.json.ei.1.1.tmp"
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"half")
    share.rename(away)
    # when the writer gives up, the file cannot be removed, and is remembered
    tempfiles.discard(tmp)
    assert tempfiles.sweep_orphans() == 1  # still away: still waiting
    # then, once the share is back, the next sweep removes it
    away.rename(share)
    assert tmp.exists()
    assert tempfiles.sweep_orphans() == 0
    assert not tmp.exists()


def test_discard_of_a_temp_file_in_a_present_folder_removes_it_at_once(tmp_path: Path) -> None:
    tmp = tmp_path / ".b.json.ei.1.1.tmp"
    tmp.write_bytes(b"x")
    tempfiles.discard(tmp)
    tempfiles.discard(tmp_path / ".never-written.tmp")  # a write that failed before its temp file existed
    assert not tmp.exists() and tempfiles.sweep_orphans() == 0


def test_the_start_up_sweep_removes_this_replicas_leftovers_and_old_ones_only(tmp_path: Path) -> None:
    mine = tmp_path / "r" / ".a.json.me.10.1.tmp"
    live = tmp_path / "r" / ".b.json.other.11.1.tmp"
    old = tmp_path / "r" / ".c.json.other.12.1.tmp"
    frame = tmp_path / "r" / "d.json"
    for p in (mine, live, old, frame):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    os.utime(old, (1, 1))
    assert tempfiles.remove_stale(tmp_path, "me") == 2
    assert live.exists() and frame.exists() and not mine.exists() and not old.exists()
