"""Two module replicas on one share (a Kubernetes scale-out): each frame is processed by exactly one of them,
also when one replica is killed -9 mid-run and the other adopts its claims once its heartbeat goes stale.
A killed replica's temp files are removed when a replica starts (Kubernetes starts a new pod in its place).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    FrameDropper,
    ModuleProcess,
    Shares,
    audit,
    files_under,
    frame_names,
    module_env,
    result_paths,
    wait_until,
)


def replicas(tmp_path: Path, model: Path, shares: Shares) -> list[ModuleProcess]:
    out = []
    for name in ("replica-a", "replica-b", "replica-c"):
        state = tmp_path / f"state-{name}"
        state.mkdir()
        env = module_env(model, shares, None, replica=name, STATE_DIR=state, CLAIM_STALE_SECONDS=5)
        out.append(ModuleProcess(env, tmp_path / f"{name}.log"))
    return out


@pytest.mark.timeout(240)
def test_two_replicas_on_one_share_process_every_frame_once_even_when_one_is_killed(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    a, b, c = replicas(tmp_path, model, shares)
    names = frame_names(300)
    dropper = FrameDropper(shares.input)
    try:
        # given two replicas sharing INPUT_DIR and OUTPUT_DIR, each with its own STATE_DIR and REPLICA_ID
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        # when 300 frames arrive and replica a is killed -9 part-way through
        dropper.start(names, per_second=60)
        time.sleep(random.Random(3).uniform(1.5, 3.0))
        a.kill()
        dropper.join(60)
        # then replica b finishes everything, a's claims included (adopted after CLAIM_STALE_SECONDS)
        a_claims = shares.input / ".edge-inference" / "claims" / "replica-a"
        wait_until(
            lambda: not [p for p in files_under(a_claims) if not p.endswith(".heartbeat")],
            60,
            "b adopting a's claims",
            b.log_tail,
        )
        # and the pod that Kubernetes starts in a's place (a new name) sweeps the temp file a left behind
        c.start()
        c.wait_ready()
        wait_until(
            lambda: not audit(shares, names).problems(),
            120,
            "every frame done once",
            lambda: f"{audit(shares, names).problems()}\n{b.log_tail()}",
        )
        result = audit(shares, names)
        assert b.terminate() == 0
        assert c.terminate() == 0
    finally:
        dropper.stop()
        for m in (a, b, c):
            m.close()
    adopted = "adopted" in b.log_path.read_text()
    print(f"\nreplicas: {result.summary()}, b adopted a's claims: {adopted}")
    assert len(result_paths(shares.output)) == len(names)
    assert not result.problems()
