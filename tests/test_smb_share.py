"""Frames written over SMB by a line PC: taken whole, once, and never lost (issue 10).

The rig (`tools/smb_rig.py`) is real: Samba's smbd on loopback, the share mounted through smbnetfs (FUSE, so
`WATCH_MODE=auto` polls it and FUSE caches its attributes for a second), and a camera writing over its own SMB
session with smbprotocol. The module runs as `python -m edge_inference` with INPUT_DIR on that mount and
OUTPUT_DIR on the local disk, so every archive is a cross-device move. A rig that cannot start fails the test
with the reason; nothing here is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inference.share import share_fs
from edge_inference.share.claims import ClaimArea
from edge_inference.share.mounts import filesystem_type, settle_window
from tests.faults.harness import ModuleProcess, Shares, audit, build_model, module_env, wait_until
from tools.smb_rig import LINUX_CIFS_SHARE_MODE, WINDOWS_SHARE_MODE, SmbCamera, SmbRig

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def smb(tmp_path: Path) -> Iterator[SmbRig]:
    with SmbRig(tmp_path / "smb") as rig:
        yield rig


def camera_of(rig: SmbRig) -> SmbCamera:
    assert rig.camera is not None
    return rig.camera


def jpeg_1080p(seed: int) -> bytes:
    """A 1920x1080 JPEG of a few hundred KB (a lit surface with sensor noise), different per seed."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 210, 1920, dtype=np.float32)[None, :] + np.linspace(0, 30, 1080, dtype=np.float32)[:, None]
    image = np.clip(ramp[..., None] + rng.normal(0, 6, (1080, 1920, 3)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def telemetry_ids(output: Path) -> dict[str, set[str]]:
    """frame path -> distinct message ids the module sent on `detections` (local mode's telemetry.jsonl)."""
    ids: dict[str, set[str]] = {}
    path = output / "telemetry.jsonl"
    if not path.exists():
        return ids
    for line in path.read_text().splitlines():
        message = json.loads(line)
        if message["output"] == "detections":
            ids.setdefault(message["body"]["frame"]["path"], set()).add(message["messageId"])
    return ids


def start_module(tmp_path: Path, rig: SmbRig, **env: str) -> tuple[ModuleProcess, Shares]:
    shares = Shares(tmp_path, rig.input_dir, tmp_path / "output", tmp_path / "state")
    for folder in (shares.output, shares.state):
        folder.mkdir(parents=True, exist_ok=True)
    overrides = {"LOCAL_TELEMETRY": "true", "POLL_INTERVAL_SECONDS": "0.5", **env}
    module = ModuleProcess(module_env(build_model(tmp_path / "model.onnx"), shares, **overrides), tmp_path / "m.log")
    module.start()
    module.wait_ready()
    return module, shares


def every_frame_once_whole_and_archived(shares: Shares, written: dict[str, bytes], module: ModuleProcess) -> None:
    """Each frame: one result, not an error, one message id, its original archived byte for byte; nothing left."""
    expected = sorted(written)

    def done() -> bool:
        return set(telemetry_ids(shares.output)) >= set(expected) and not audit(shares, expected).problems()

    wait_until(
        done, 90, f"{len(expected)} frames done", lambda: f"{audit(shares, expected).problems()}\n{module.log_tail()}"
    )
    ids = telemetry_ids(shares.output)
    assert {p: len(ids[p]) for p in expected} == dict.fromkeys(expected, 1)
    for rel, data in written.items():
        assert (shares.output / "processed" / rel).read_bytes() == data, rel
    log_text = module.this_run_log()
    assert "corrupt_image" not in log_text and "Traceback" not in log_text, module.log_tail()
    assert module.alive


def write_all(jobs: list[Callable[[], None]]) -> None:
    """Run the writers at once, as several cameras would; any writer's error fails the test."""
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_the_mount_is_polled_with_a_settle_window_past_its_attribute_cache(smb: SmbRig) -> None:
    # given the share mounted through FUSE (smbnetfs), then the watcher polls it, waits longer than FUSE's
    # attribute cache (1 s) and does not trust mtimes (SMB keeps the first write's mtime until close)
    assert filesystem_type(smb.input_dir).startswith("fuse")
    assert settle_window(smb.input_dir, 0.3) == (2.0, False)


def test_frames_written_over_smb_are_each_taken_whole_once_and_archived_byte_identical(
    tmp_path: Path, smb: SmbRig
) -> None:
    camera = camera_of(smb)
    module, shares = start_module(tmp_path, smb)
    written: dict[str, bytes] = {}
    jobs: list[Callable[[], None]] = []
    # slow in-place writers, 1080p JPEGs in 48 KiB chunks, with both share modes (Windows: a rename fails while
    # the file is open; Linux cifs: a rename succeeds mid-write and the writer's handle follows the file)
    for i, mode in enumerate([WINDOWS_SHARE_MODE] * 4 + [LINUX_CIFS_SHARE_MODE] * 4):
        rel, data = f"inplace/{mode}/{i:03d}.jpg", jpeg_1080p(i)
        written[rel] = data
        jobs.append(
            lambda rel=rel, data=data, mode=mode: camera.write_in_place(rel, data, share_access=mode, pause=0.12)
        )
    # writers that stall half-way for longer than the settle window (2 s here): the Windows share mode keeps the
    # claim waiting; with Linux cifs' the frame is claimed half-written, decodes as truncated and must wait, with
    # no result, until its writer finished it
    for i, mode in enumerate([WINDOWS_SHARE_MODE, LINUX_CIFS_SHARE_MODE]):
        rel, data = f"stalled/{mode}.jpg", jpeg_1080p(50 + i)
        written[rel] = data
        jobs.append(
            lambda rel=rel, data=data, mode=mode: camera.write_in_place(
                rel, data, share_access=mode, pause=6.0, chunk=len(data) // 2 + 1
            )
        )
    # temp name + rename, in nested folders
    for i in range(12):
        rel, data = f"line{i % 2}/cam{i % 3}/{i:05d}.jpg", jpeg_1080p(100 + i)
        written[rel] = data
        jobs.append(lambda rel=rel, data=data: camera.write_renamed(rel, data))
    write_all(jobs)
    # and a burst of small frames, written in place as fast as the camera can
    burst = {
        f"burst/{i:04d}.jpg": cv2.imencode(".jpg", np.full((48, 64, 3), i % 250, np.uint8))[1].tobytes()
        for i in range(120)
    }
    write_all(
        [lambda: [camera.write_in_place(r, d, share_access=WINDOWS_SHARE_MODE, pause=0) for r, d in burst.items()]]
    )
    written.update(burst)
    every_frame_once_whole_and_archived(shares, written, module)
    assert "stalled/rwd.jpg: truncated JPEG" in module.this_run_log()  # it was taken half-written, and waited
    assert module.terminate() == 0


def test_smbd_stopped_for_20_s_mid_run_loses_nothing_and_the_module_stays_up(tmp_path: Path, smb: SmbRig) -> None:
    camera = camera_of(smb)
    module, shares = start_module(tmp_path, smb)
    written = {f"before/{i:03d}.jpg": jpeg_1080p(i) for i in range(6)}
    write_all([lambda: [camera.write_renamed(r, d) for r, d in written.items()]])
    # when the server stops while frames are waiting and in flight
    time.sleep(2.5)
    smb.server.stop()
    stopped = time.monotonic()
    wait_until(
        lambda: "input share unavailable" in module.this_run_log(),
        20,
        "intake paused (inputUnavailable)",
        module.log_tail,
    )
    time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
    assert module.alive, module.log_tail()
    # then it comes back, the camera logs in again and goes on, and everything resumes by itself
    smb.server.start()
    camera.reconnect()
    after = {f"after/{i:03d}.jpg": jpeg_1080p(50 + i) for i in range(6)}
    write_all([lambda: [camera.write_renamed(r, d) for r, d in after.items()]])
    written.update(after)
    every_frame_once_whole_and_archived(shares, written, module)
    wait_until(lambda: "intake resumed" in module.this_run_log(), 10, "intake resumed", module.log_tail)
    assert module.terminate() == 0


def test_a_claim_refused_while_a_windows_writer_holds_the_frame_is_a_quiet_not_ready_yet(
    tmp_path: Path, smb: SmbRig, caplog: pytest.LogCaptureFixture
) -> None:
    # given a frame still open by a writer that lets others read only (a Windows program)
    camera = camera_of(smb)
    claims = ClaimArea(smb.input_dir, tmp_path / "out", "r1", "archive", 300)
    claims.prepare()
    opened, release = threading.Event(), threading.Event()

    def writer() -> None:
        with camera._smb.open_file(
            camera.unc("held.jpg"), mode="wb", share_access=WINDOWS_SHARE_MODE, port=camera.server.port
        ) as fh:
            fh.write(b"\xff\xd8" + b"x" * 1000)
            fh.flush()
            opened.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert opened.wait(10)
        # when the module tries to claim it, the rename is refused as busy (EBUSY): not ready, nothing logged
        with caplog.at_level(logging.WARNING), pytest.raises(OSError) as refused:
            claims.claim("held.jpg")
        assert share_fs.is_busy(refused.value) and not caplog.records
    finally:
        release.set()
        thread.join(30)
    # then, once the writer closed it, the claim goes through
    assert claims.claim("held.jpg") == claims.own / "held.jpg"


def test_a_cross_device_archive_from_the_smb_mount_copies_bytes_and_times_only(tmp_path: Path, smb: SmbRig) -> None:
    # given a frame on the SMB mount, where listing extended attributes fails, as shutil.copy2 does: the old
    # archive. smbnetfs then answers everything with EIO for ~3 s (its negative cache): a real passing error
    frame = jpeg_1080p(7)
    camera_of(smb).write_renamed("cam/a.jpg", frame)
    source = smb.input_dir / "cam" / "a.jpg"
    mtime = os.stat(source).st_mtime_ns
    with pytest.raises(OSError):
        shutil.copy2(source, tmp_path / "copy2.jpg")
    wait_until(lambda: _answers(source), 15, "the mount to answer again")
    # when it is archived to a local output share, then the bytes and the mtime arrive, and the source is gone
    out = tmp_path / "out"
    out.mkdir()
    share_fs.move(smb.input_dir, "cam/a.jpg", out, "processed/cam/a.jpg")
    archived = out / "processed" / "cam" / "a.jpg"
    assert archived.read_bytes() == frame and os.stat(archived).st_mtime_ns == mtime
    assert not source.exists() and not [p for p in archived.parent.iterdir() if p.name.startswith(".")]


def _answers(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True
