"""Share faults on real mounts: the output share fills up, and either share disappears and comes back.

The shares are tmpfs or bind mounts the test makes (root in the sandbox); "gone" means the mount is lazily
unmounted and the mount point left on a read-only file system, so every write fails as on a dead SMB/NFS
mount and nothing can land unseen under the mount point.
"""

from __future__ import annotations

import contextlib
import errno
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    FrameDropper,
    ModuleProcess,
    Shares,
    can_mount,
    frame_names,
    module_env,
    result_paths,
    temp_files,
    wait_all_done,
    wait_until,
)

pytestmark = pytest.mark.skipif(not can_mount(), reason="needs root to mount tmpfs/bind shares")


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Write a ballast file until the file system has at most `leave_bytes` free (ENOSPC ends it)."""
    import os

    ballast = folder / f"ballast-{time.monotonic_ns()}.bin"
    chunk = b"\0" * 65536
    with open(ballast, "wb") as fh:
        try:
            while True:
                st = os.statvfs(folder)
                free = st.f_bavail * st.f_frsize
                if free <= leave_bytes:
                    break
                fh.write(chunk[: min(len(chunk), max(4096, free - leave_bytes))])
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


def health(rig: Any, alarm: str, active: bool) -> list[Any]:
    return [
        m
        for m in rig.messages("alerts")
        if m.properties.get("messageType") == "health"
        and m.properties.get("alarm") == alarm
        and m.properties.get("active") == ("true" if active else "false")
    ]


def every_result_is_whole(output: Path) -> None:
    for rel in result_paths(output):
        json.loads((output / "results" / f"{rel}.json").read_bytes())  # never half-written


@pytest.mark.timeout(240)
def test_a_full_output_share_pauses_intake_raises_the_alarm_writes_nothing_half_and_resumes(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    # given the output share is a 4 MB tmpfs and the module wants 1 MB free
    shares.mount_tmpfs(shares.output, "4m")
    module = ModuleProcess(module_env(model, shares, rig, MIN_FREE_MB=1), tmp_path / "module.log")
    module.start()
    module.wait_ready()
    dropper = FrameDropper(shares.input)
    first = frame_names(40, "before/cam")
    dropper.drop_all(first[:20])
    wait_until(lambda: len(result_paths(shares.output)) >= 20, 60, "the first frames", module.log_tail)
    # when the share fills to the last byte while frames keep coming
    dropper.start(first[20:], per_second=20)
    ballast = fill(shares.output)
    dropper.join(30)
    # then the alarm goes out on `alerts` (health / outputShareLow) and intake is blocked
    rig.wait_messages(1, output="alerts", timeout=30, predicate=lambda m: m.properties.get("alarm") == "outputShareLow")
    assert health(rig, "outputShareLow", True)[0].properties["severity"] == "critical"
    status, body = rig.invoke_method("getStatus", {}, timeout=15)
    assert status == 200 and body["intakeBlocked"], body
    # and more frames wait on the share: no new result appears, nothing is half-written
    later = frame_names(20, "during/cam")
    dropper.drop_all(later)
    time.sleep(3)
    stuck = len(result_paths(shares.output))
    time.sleep(2)
    assert len(result_paths(shares.output)) == stuck
    every_result_is_whole(shares.output)
    assert not temp_files(shares.output)
    assert not list((shares.output / "failed").rglob("*")) if (shares.output / "failed").exists() else True
    # when space returns, it resumes by itself and clears the alarm
    ballast.unlink()
    names = first + later
    result = wait_all_done(shares, names, rig, module, timeout=120)
    rig.wait_messages(
        1,
        output="alerts",
        timeout=30,
        predicate=lambda m: m.properties.get("alarm") == "outputShareLow" and m.properties.get("active") == "false",
    )
    assert module.terminate() == 0
    print(f"\nfull share: {stuck} results before space returned; {result.summary()}")
    assert not result.problems()


@pytest.mark.parametrize("share", ["output", "input"])
@pytest.mark.timeout(240)
def test_a_share_that_disappears_and_comes_back_loses_nothing(
    tmp_path: Path, model: Path, shares: Shares, rig: Any, share: str
) -> None:
    # given both shares are mounts, and `share` can be taken away
    shares.detachable(share)
    module = ModuleProcess(module_env(model, shares, rig), tmp_path / "module.log")
    module.start()
    module.wait_ready()
    dropper = FrameDropper(shares.input)
    before, after = frame_names(60, "before/cam"), frame_names(40, "after/cam")
    # when the share goes away in the middle of a stream of frames, for 6 s
    dropper.start(before, per_second=30)
    time.sleep(1.0)
    if share == "input":
        dropper.stop()  # the camera cannot write to a share that is gone either
    shares.detach(share)
    gone_at = time.monotonic()
    # the operator hears of it at once, frames in flight or not
    alarm = f"{share}ShareUnavailable"
    wait_until(lambda: bool(health(rig, alarm, True)), 5, f"the {alarm} alarm", module.log_tail)
    time.sleep(max(0.0, 6 - (time.monotonic() - gone_at)))
    assert module.alive, f"the module died while the {share} share was gone:\n{module.log_tail()}"
    status, body = rig.invoke_method("getStatus", {}, timeout=15)
    assert status == 200 and body["intakeBlocked"], body
    shares.attach(share)
    print(f"\n{share} share gone for {time.monotonic() - gone_at:.1f}s")
    with contextlib.suppress(BaseException):
        dropper.join(30)
    dropped = list(dropper.dropped)
    # then, once it is back, every frame dropped before and after is processed exactly once
    dropper2 = FrameDropper(shares.input)
    dropper2.drop_all(after)
    names = dropped + after
    result = wait_all_done(shares, names, rig, module, timeout=15 if share == "input" else 120)
    wait_until(lambda: bool(health(rig, alarm, False)), 10, f"the {alarm} alarm cleared", module.log_tail)
    assert module.terminate() == 0
    print(f"{share}: {result.summary()}")
    assert not result.problems()
