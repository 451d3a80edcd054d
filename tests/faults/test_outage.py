"""edgeHub (the MQTT broker) goes away under load and comes back: every message is delivered.

The module keeps processing while edgeHub is down (results on the share, messages in the durable outbox in
STATE_DIR); when the broker returns, the outbox drains and each frame's message id reaches `detections`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    FrameDropper,
    ModuleProcess,
    Shares,
    delivered_ids,
    frame_names,
    module_env,
    result_paths,
    wait_all_done,
)


def outage_run(tmp_path: Path, model: Path, shares: Shares, rig: Any, seconds: float, rate: float) -> None:
    module = ModuleProcess(module_env(model, shares, rig), tmp_path / "module.log")
    module.start()
    module.wait_ready()
    frames = int(seconds * rate) + 40
    names = frame_names(frames)
    dropper = FrameDropper(shares.input)
    # given frames arriving steadily
    dropper.start(names, per_second=rate)
    time.sleep(20 / rate)
    # when edgeHub goes down for `seconds` (a crash: no clean session save)
    rig.stop_broker(graceful=False)
    down_at = time.monotonic()
    delivered_before = len(delivered_ids(rig))
    time.sleep(seconds)
    # then the frames were still processed meanwhile (results on the share)
    done_while_down = len(result_paths(shares.output))
    assert module.alive, module.log_tail()
    rig.start_broker()
    outage = time.monotonic() - down_at
    dropper.join(seconds + 120)
    # and once it is back every frame's message arrives, once per id
    result = wait_all_done(shares, names, rig, module, timeout=120 + frames * 0.1)
    assert module.terminate() == 0
    print(
        f"\nbroker down {outage:.0f}s: {delivered_before} delivered before, {done_while_down} results by the end of"
        f" the outage; {result.summary()}"
    )
    assert done_while_down > delivered_before
    assert not result.problems()


@pytest.mark.timeout(240)
def test_a_20s_edgehub_outage_under_load_delivers_every_message(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    outage_run(tmp_path, model, shares, rig, seconds=20, rate=5)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_10_minute_edgehub_outage_under_load_delivers_every_message(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    outage_run(tmp_path, model, shares, rig, seconds=600, rate=2)
