"""`python -m edge_inference` as a process: exit codes, SIGTERM, and kill -9 mid-run then restart."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.onnx_models import build_constant_model, yolov8_output
from tools.module_process import module_process_env


def module_env(shares: dict[str, Path], model: Path, **extra: str) -> dict[str, str]:
    return module_process_env(
        MODEL_PATH=str(model),
        INPUT_DIR=str(shares["input"]),
        OUTPUT_DIR=str(shares["output"]),
        STATE_DIR=str(shares["state"]),
        SETTLE_SECONDS="0.05",
        RESCAN_INTERVAL_SECONDS="1",
        HTTP_PORT="0",
        METRICS_PORT="0",
        LOCAL_TELEMETRY="false",
        PYTHONUNBUFFERED="1",
        **extra,
    )


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_inference"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def ready_count(log: Path) -> int:
    return log.read_text(errors="replace").count("] edge-inference ") if log.exists() else 0


def wait_ready(log: Path, count: int, timeout: float = 60) -> None:
    """Until the log shows the `count`-th start-up completed (signals are handled from then on)."""
    deadline = time.monotonic() + timeout
    while ready_count(log) < count:
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.05)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    out = yolov8_output([(20, 32, 10, 10)], [[0.9, 0.05]])
    return build_constant_model(tmp_path / "tiny.onnx", out, names="{0: 'scratch', 1: 'dent'}")


def drop(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.tmp.jpg")
    cv2.imwrite(str(tmp), image)
    os.replace(tmp, path)


@pytest.mark.timeout(60)
def test_a_bad_setting_exits_2_with_one_clear_line(shares: dict[str, Path], model: Path, tmp_path: Path) -> None:
    env = module_env(shares, model, CONFIDENCE_THRESHOLD="high")
    proc = subprocess.run([sys.executable, "-m", "edge_inference"], env=env, capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"CONFIDENCE_THRESHOLD='high' is invalid: expected a number from 0 to 1" in proc.stdout


@pytest.mark.timeout(60)
def test_require_gpu_on_a_cpu_host_exits_2(shares: dict[str, Path], model: Path) -> None:
    env = module_env(shares, model, REQUIRE_GPU="true")
    proc = subprocess.run([sys.executable, "-m", "edge_inference"], env=env, capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"REQUIRE_GPU=true but no GPU execution provider started" in proc.stdout
    assert b"no NVIDIA device nodes in /dev" in proc.stdout


@pytest.mark.timeout(90)
def test_sigterm_drains_and_exits_0(shares: dict[str, Path], model: Path, tmp_path: Path) -> None:
    proc = spawn(module_env(shares, model), tmp_path / "module.log")
    try:
        for i in range(20):
            drop(shares["input"] / f"f{i:03d}.jpg", i)
        wait_ready(tmp_path / "module.log", 1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    log = (tmp_path / "module.log").read_text()
    assert "draining" in log and "stopped" in log


@pytest.mark.timeout(240)
def test_kill_9_mid_run_then_restart_gives_exactly_one_result_per_frame(
    shares: dict[str, Path], model: Path, tmp_path: Path
) -> None:
    rng = random.Random(7)
    names = [f"line{i % 2}/cam{i % 3}/{i:04d}.jpg" for i in range(120)]
    env = module_env(shares, model, BATCH_SIZE="4")
    log = tmp_path / "module.log"
    proc = spawn(env, log)
    dropped = 0
    try:
        for _kill in range(3):
            # drop a burst while the module works, then kill -9 at a random moment
            burst = names[dropped : dropped + 40]
            for j, name in enumerate(burst):
                drop(shares["input"] / name, dropped + j)
            dropped += len(burst)
            time.sleep(rng.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            starts = ready_count(log)
            proc = spawn(env, log)
        wait_ready(log, starts + 1)  # the last start is up: signals are handled from here
        deadline = time.monotonic() + 120
        results = shares["output"] / "results"
        while time.monotonic() < deadline:
            done = (
                sorted(p.relative_to(results).as_posix() for p in results.rglob("*.json")) if results.exists() else []
            )
            if len(done) >= len(names):
                break
            time.sleep(0.25)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    done = sorted(p.relative_to(results).as_posix().removesuffix(".json") for p in results.rglob("*.json"))
    assert done == sorted(names), (set(names) - set(done), (shares["output"] / "..").resolve())
    for name in names:
        body = json.loads((results / f"{name}.json").read_text())
        assert body["frame"]["path"] == name and "error" not in body
        assert (shares["output"] / "processed" / name).is_file()
    assert not (shares["output"] / "failed").exists()
    leftovers = [
        p for p in shares["input"].rglob("*") if p.is_file() and p.name != ".heartbeat"
    ]  # nothing left in the share or the claim area
    assert leftovers == []
    temps = [p for p in shares["output"].rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert temps == []
