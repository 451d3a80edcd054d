"""Process faults: SIGKILL at random moments while frames arrive, and SIGTERM under load.

Given the real module (`python -m edge_inference`) against the edgeHub rig, when it is killed -9 again and
again while a camera drops frames and restarted each time, then every frame ends with exactly one result file,
one delivered message id on `detections` (a resend of the same id is allowed: upstream drops it), nothing good
in failed/, nothing left claimed and no temp file anywhere.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    FrameDropper,
    ModuleProcess,
    Shares,
    frame_names,
    module_env,
    random_kills,
    wait_all_done,
)


def kill_run(tmp_path: Path, model: Path, shares: Shares, rig: Any, frames: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    module = ModuleProcess(module_env(model, shares, rig), tmp_path / "module.log")
    names = frame_names(frames)
    dropper = FrameDropper(shares.input)
    # the camera drops over roughly the time the kills take (about 2.5 s per start, kill, restart)
    dropper.start(names, per_second=max(5.0, frames / (kills * 2.5)))
    try:
        runs = random_kills(module, kills, rng)
        dropper.join(600)
        # then a last run that is left alone finishes everything
        module.start()
        module.wait_ready()
        result = wait_all_done(shares, names, rig, module, timeout=120 + frames * 0.3)
        assert module.terminate() == 0
    finally:
        dropper.stop()
        module.close()
    print(f"\n{kills} SIGKILLs after {[round(r, 2) for r in runs]} s; {result.summary()}")
    assert not result.problems()


@pytest.mark.timeout(240)
def test_three_kills_while_100_frames_arrive_lose_and_duplicate_nothing(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    kill_run(tmp_path, model, shares, rig, frames=100, kills=3, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_twenty_kills_while_500_frames_arrive_lose_and_duplicate_nothing(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    kill_run(tmp_path, model, shares, rig, frames=500, kills=20, seed=20)


@pytest.mark.timeout(240)
def test_sigterm_under_load_drains_in_time_exits_0_and_a_restart_finishes_the_rest(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    # given the module busy with a backlog of 300 frames
    names = frame_names(300)
    FrameDropper(shares.input).drop_all(names)
    module = ModuleProcess(module_env(model, shares, rig, SHUTDOWN_TIMEOUT_SECONDS=5), tmp_path / "module.log")
    module.start()
    module.wait_ready()
    time.sleep(0.5)
    # when it gets SIGTERM mid-backlog
    began = time.monotonic()
    code = module.terminate(timeout=30)
    took = time.monotonic() - began
    # then it exits 0 within its deadline (plus interpreter start/stop slack)
    assert code == 0, module.log_tail()
    assert took < 5 + 5, f"SIGTERM took {took:.1f}s with SHUTDOWN_TIMEOUT_SECONDS=5"
    first = module.this_run_log()
    assert "signal SIGTERM received" in first and "stopped (" in first
    # and a restart finishes the rest, each frame once
    module.start()
    module.wait_ready()
    result = wait_all_done(shares, names, rig, module, timeout=180)
    assert module.terminate() == 0
    print(f"\nSIGTERM took {took:.2f}s; {result.summary()}")
    assert not result.problems()
