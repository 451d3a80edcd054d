"""The whole module (`python -m edge_inference`) against the edgeHub rig: frames in, telemetry out, twin live.

The model is a tiny constant ONNX model (tests/onnx_models.py) with two fixed detections, scratch 0.9 and
dent 0.6, so a test knows what every frame must report; frames come from `tools.synthetic`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.dtdl import conformance, contents
from tools.module_process import fast_module_env

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")

HOSTS = ("127.0.0.9", "127.0.0.8", "127.0.0.7")


def drop_frame(input_dir: Path, rel: str, seed: int) -> None:
    """Write a synthetic JPEG next to the share and rename it in, as a camera that writes then renames."""
    import cv2

    from tools.synthetic import generate_frame

    image, _ = generate_frame(np.random.default_rng(seed), width=320, height=240)
    target = input_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = input_dir.parent / f".{seed}.tmp.jpg"
    assert cv2.imwrite(str(tmp), image)
    os.replace(tmp, target)


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from tests.onnx_models import build_constant_model, yolov8_output
    from tools.edgehub_rig import EdgeHubRig, pick_loopback_host

    model = build_constant_model(
        tmp_path / "two-defects.onnx",
        yolov8_output([(16, 16, 10, 10), (48, 48, 10, 10)], [[0.9, 0.0], [0.0, 0.6]]),
        names="{0: 'scratch', 1: 'dent'}",
    )
    dirs = {name: tmp_path / name for name in ("input", "output", "state")}
    for d in dirs.values():
        d.mkdir()
    with EdgeHubRig(tmp_path / "rig", host=pick_loopback_host(HOSTS)) as rig:
        env = fast_module_env(rig.env(), model, dirs, "e2e")
        log_path = tmp_path / "module.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_inference"], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
            try:
                yield {"rig": rig, "proc": proc, "log": log_path, **dirs}
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


def wait_ready(m: dict[str, Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while b" ready (" not in m["log"].read_bytes():
        assert m["proc"].poll() is None, m["log"].read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, m["log"].read_text(errors="replace")[-3000:]
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_frames_become_messages_and_a_twin_edit_changes_the_next_frame(module: dict[str, Any]) -> None:
    rig = module["rig"]
    # given the module running against edgeHub with the boot threshold 0.5
    wait_ready(module)
    rig.wait_reported(lambda r: "runtime" in r, timeout=20)
    # it announced its Plug and Play model ID when it connected (the SDK puts it in the MQTT user name), and
    # its reported runtime fits the DTDL interface
    usernames = [c.username or "" for c in rig.connections()]
    assert any("&model-id=dtmi%3Aedgeinference%3AEdgeInference%3B1" in u for u in usernames), usernames
    read_only = contents("Property", writable=False)
    assert conformance(rig.reported["runtime"], read_only["runtime"]["schema"], "runtime") == []
    # when N frames are dropped
    n = 5
    for i in range(n):
        drop_frame(module["input"], f"line1/cam2/{i:04d}.jpg", seed=i)
    # then N messages arrive on `detections`, one per frame, each with both detections
    got = rig.wait_messages(n, output="detections", timeout=60)
    assert sorted(g.json()["frame"]["path"] for g in got) == [f"line1/cam2/{i:04d}.jpg" for i in range(n)]
    assert len({g.message_id for g in got}) == n
    for g in got:
        assert g.content_type == "application/json" and g.content_encoding == "utf-8"
        assert g.properties["detectionCount"] == "2" and g.properties["labels"] == "dent,scratch"
    # when the operator raises the threshold to 0.8 in the twin
    version = rig.set_desired({"confidenceThreshold": 0.8})
    rig.wait_reported(lambda r: r["confidenceThreshold"]["av"] == version, timeout=20)
    assert rig.reported["confidenceThreshold"]["ac"] == 200
    rig.clear_messages()
    drop_frame(module["input"], "line1/cam2/after.jpg", seed=99)
    # then the next frame reports only the 0.9 detection, under the new threshold
    after = rig.wait_messages(1, output="detections", timeout=60)[0].json()
    assert after["frame"]["path"] == "line1/cam2/after.jpg"
    assert after["thresholds"]["confidence"] == 0.8
    assert [d["label"] for d in after["detections"]] == ["scratch"]
    if "stats" in rig.reported:  # throttled: reported when it changes, at most every 30 s
        assert conformance(rig.reported["stats"], read_only["stats"]["schema"], "stats") == []
    # and SIGTERM stops it cleanly
    module["proc"].send_signal(signal.SIGTERM)
    assert module["proc"].wait(40) == 0
    text = module["log"].read_text(errors="replace")
    assert rig.module_key not in text and "SharedAccessSignature" not in text  # secrets never logged
