"""Confined file operations on real files and mounts: nothing outside the root, cross-device moves that keep the
source until the copy is whole, no overwrite where none is wanted, and names that are not UTF-8."""

# ruff: noqa: F811 (the tmpfs fixture of test_share_hostile.py is imported, then named as a test argument)

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edge_inference.share import share_fs
from edge_inference.share.claims import ClaimArea
from tests.test_share_hostile import tmpfs  # noqa: F401 (a fixture: a real tmpfs mount)

pytestmark = pytest.mark.timeout(30)


def test_a_cross_device_move_that_fails_half_way_leaves_the_source_and_no_temp_file(
    tmp_path: Path, tmpfs: Path
) -> None:
    # given an 8 MiB frame and a 4 MiB output file system on another device
    src = tmp_path / "in" / "cam" / "big.jpg"
    src.parent.mkdir(parents=True)
    data = os.urandom(8 << 20)
    src.write_bytes(data)
    # when it is moved there, the copy runs out of space half-way
    with pytest.raises(OSError) as full:
        share_fs.move(tmp_path / "in", "cam/big.jpg", tmpfs, "processed/cam/big.jpg")
    # then the source is untouched for a retry, and neither the target nor a temp file is left
    assert full.value.errno == errno.ENOSPC and src.read_bytes() == data
    assert list((tmpfs / "processed" / "cam").iterdir()) == []


def test_a_cross_device_move_keeps_bytes_and_mtime_and_then_removes_the_source(tmp_path: Path, tmpfs: Path) -> None:
    src = tmp_path / "in" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"frame bytes")
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    share_fs.move(tmp_path / "in", "a.jpg", tmpfs, "processed/a.jpg")
    moved = tmpfs / "processed" / "a.jpg"
    assert moved.read_bytes() == b"frame bytes" and os.stat(moved).st_mtime_ns == 1_600_000_000_123_456_789
    assert not src.exists()


def test_no_operation_follows_a_symlinked_folder(tmp_path: Path) -> None:
    root, outside = tmp_path / "share", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    (root / "link").symlink_to(outside)
    for operation in (
        lambda: share_fs.lstat(root, "link/secret.jpg"),
        lambda: share_fs.rename(root, "link/secret.jpg", root, "real/x.jpg"),
        lambda: share_fs.copy(root, "link/secret.jpg", root, "real/x.jpg"),
        lambda: share_fs.remove(root, "link/secret.jpg"),
        lambda: share_fs.copy(root, "real/none.jpg", root, "link/x.jpg"),  # nor written through
    ):
        with pytest.raises(OSError):
            operation()
    with pytest.raises(share_fs.OutsideShare):
        share_fs.lstat(root, "link/secret.jpg")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jpg"]
    assert (outside / "secret.jpg").read_bytes() == b"secret"


def test_a_copy_without_replace_never_overwrites_and_a_symlinked_source_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    (root / "archived.jpg").write_bytes(b"old")
    (root / "waiting.jpg").write_bytes(b"new")
    with pytest.raises(FileExistsError):
        share_fs.copy(root, "archived.jpg", root, "waiting.jpg", replace=False)
    assert (root / "waiting.jpg").read_bytes() == b"new" and [p.name for p in root.iterdir() if p.name[0] == "."] == []
    (root / "link.jpg").symlink_to(root / "archived.jpg")
    with pytest.raises(OSError):
        share_fs.copy(root, "link.jpg", root, "copy.jpg")


def test_a_frame_whose_name_is_not_utf8_is_claimed_and_archived_under_its_own_bytes(tmp_path: Path) -> None:
    # given a legacy client's Latin-1 name (b"caf\xe9.jpg"), which Python carries surrogate-escaped
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "cam").mkdir(parents=True)
    out.mkdir()
    raw = os.path.join(os.fsencode(inp), b"cam", b"caf\xe9.jpg")
    with open(raw, "wb") as fh:
        fh.write(b"jpeg")
    rel = "cam/" + os.fsdecode(b"caf\xe9.jpg")
    claims = ClaimArea(inp, out, "r1", "archive", 300)
    claims.prepare()
    # when it is claimed, read and archived
    assert claims.claim(rel) is not None
    with claims.readable(rel) as path:
        assert path.read_bytes() == b"jpeg"
    claims.dispose(rel, ok=True)
    # then the archived file has the very same bytes as its name
    assert os.listdir(os.path.join(os.fsencode(out), b"processed", b"cam")) == [b"caf\xe9.jpg"]
