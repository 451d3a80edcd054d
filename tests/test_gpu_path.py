"""The GPU path against a faked GPU (tests/gpu_fakes.py: real CPU sessions that say they are CUDA).

Given a GPU provider that starts, every batch size the batcher can form is warmed; given one that fails at
warm-up, the chain records it and moves on (or, with REQUIRE_GPU, the module exits 2 with one line); given one
that fails while serving, `gpuLost` is raised, no frame is failed, and the frame is served after the restart.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edge_inference.errors import GpuError
from edge_inference.settings import read_settings
from edge_inference.vision import providers as providers_module
from edge_inference.vision.model import CPU, CUDA, OnnxModel
from tests import gpu_fakes
from tests.gpu_fakes import FakeGpuSession
from tests.onnx_models import build_constant_model, yolov8_output
from tests.test_module_process import module_env

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeGpuSession]]:
    monkeypatch.setattr(FakeGpuSession, "fail_after", None)
    monkeypatch.setattr(FakeGpuSession, "shapes", [])
    monkeypatch.setattr(ort, "InferenceSession", gpu_fakes.session_factory)
    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", gpu_fakes.ortvalue_on_host)
    yield FakeGpuSession


def tiny(tmp_path: Path, **kwargs) -> Path:  # type: ignore[no-untyped-def]
    out = yolov8_output([(32, 32, 10, 10)], [[0.9, 0.1]])
    return build_constant_model(tmp_path / "m.onnx", out, names="{0: 'a', 1: 'b'}", **kwargs)


def settings(tmp_path: Path, model: Path, **env: str):  # type: ignore[no-untyped-def]
    return read_settings({"MODEL_PATH": str(model), "STATE_DIR": str(tmp_path / "state"), **env})


def test_every_batch_size_the_batcher_forms_on_a_gpu_is_warmed(tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    # given a dynamic-batch model on a (fake) CUDA provider: the batcher forms batches of 1..8
    model = OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="cuda,cpu"))
    # then each of the 8 shapes ran once at start-up, before any frame
    assert model.provider == CUDA and model.serving_batch == 8
    assert model.warmed == tuple(range(1, 9))
    assert [shape[0] for shape in fake_gpu.shapes] == list(range(1, 9))
    assert model.runtime_info()["warmedBatchSizes"] == list(range(1, 9))


def test_a_fixed_batch_model_warms_its_one_shape_and_the_cpu_its_batch_sizes(
    tmp_path: Path, fake_gpu: type[FakeGpuSession]
) -> None:
    fixed = OnnxModel(settings(tmp_path, tiny(tmp_path, batch=4), EXECUTION_PROVIDERS="cuda,cpu"))
    assert fixed.warmed == (4,) and [s[0] for s in fake_gpu.shapes] == [4]
    cpu = OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="cpu", BATCH_SIZE="3"))
    assert cpu.provider == CPU and cpu.warmed == (1, 2, 3)


def test_the_cuda_attempt_carries_its_own_options_to_onnx_runtime(
    tmp_path: Path, fake_gpu: type[FakeGpuSession]
) -> None:
    # given TensorRT asked for but its libraries absent (as here), then CUDA on device 0
    model = OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="tensorrt,cuda,cpu", CUDA_DEVICE_ID="0"))
    chain = {a["provider"]: a for a in model.runtime_info()["providerChain"]}
    assert chain["TensorrtExecutionProvider"]["outcome"] == "skipped"
    assert "libnvinfer.so.10" in chain["TensorrtExecutionProvider"]["detail"]
    # then the session ONNX Runtime made for CUDA got device_id and the arena setting, and CUDA is reported
    options = model.provider_options()[CUDA]
    assert options["device_id"] == "0" and options["arena_extend_strategy"] == "kSameAsRequested"
    assert model.provider == CUDA and chain[CUDA]["outcome"] == "active"


def test_tensorrt_that_fails_for_real_hands_over_to_cuda_with_cudas_options(
    tmp_path: Path, fake_gpu: type[FakeGpuSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the TensorRT libraries "load" but ONNX Runtime's TensorRT provider really cannot start here
    monkeypatch.setattr(providers_module, "load_tensorrt_libraries", lambda: None)
    model = OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="tensorrt,cuda,cpu", BATCH_SIZE="4"))
    trt, cuda = model.attempts[0], model.attempts[1]
    # then the TensorRT attempt failed with ONNX Runtime's reason, carrying its profile for batch 1..4
    assert (trt.outcome, cuda.outcome) == ("failed", "active")
    assert "TensorRT" in trt.detail and trt.options["trt_profile_max_shapes"] == "images:4x3x64x64"
    # and CUDA serves with its own options; the GPU is not "lost"
    assert model.provider == CUDA and model.provider_options()[CUDA]["arena_extend_strategy"] == "kSameAsRequested"
    assert model.gpu_fault is None


def test_a_gpu_warm_up_failure_moves_on_to_the_cpu_and_is_recorded(
    tmp_path: Path, fake_gpu: type[FakeGpuSession]
) -> None:
    fake_gpu.fail_after = 0  # the first run on the GPU fails
    model = OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="cuda,cpu"))
    assert model.provider == CPU
    assert model.gpu_fault is not None and "warm-up at batch 1 failed: CUDA failure 700" in model.gpu_fault
    assert [(a.provider, a.outcome) for a in model.attempts] == [(CUDA, "failed"), (CPU, "active")]


def test_a_failing_run_on_the_gpu_raises_gpu_error(tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    fake_gpu.fail_after = 8  # warm-up (batch 1..8) works, then the device fails
    model = OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="cuda,cpu"))
    with pytest.raises(GpuError, match=r"inference failed on CUDAExecutionProvider: CUDA failure 700"):
        model.run(np.zeros((2, 3, 64, 64), np.float32))


def gpu_module_env(shares: dict[str, Path], model: Path, **extra: str) -> dict[str, str]:
    env = module_env(shares, model, EXECUTION_PROVIDERS="cuda,cpu", **extra)
    env["LOCAL_TELEMETRY"] = "true"  # alerts land in output/telemetry.jsonl
    return env


def test_a_warm_up_failure_under_require_gpu_exits_2_with_one_line(tmp_path: Path, shares: dict[str, Path]) -> None:
    env = gpu_module_env(shares, tiny(tmp_path), REQUIRE_GPU="true")
    done = subprocess.run(gpu_fakes.child_command(0), env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in (done.stdout + done.stderr).splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stdout + done.stderr
    assert "REQUIRE_GPU=true but no GPU execution provider started" in errors[0]
    assert "warm-up at batch 1 failed: CUDA failure 700" in errors[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_gpu_lost_while_serving_raises_the_alarm_keeps_the_frame_and_exits_2(
    tmp_path: Path, shares: dict[str, Path]
) -> None:
    # given a module on a (fake) GPU that fails after its warm-up, with REQUIRE_GPU
    env = gpu_module_env(shares, tiny(tmp_path), REQUIRE_GPU="true")
    log = tmp_path / "module.log"
    with log.open("w") as out:
        proc = subprocess.Popen(gpu_fakes.child_command(8), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 40
            while "] edge-inference " not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
            # when a frame arrives
            cv2.imwrite(str(tmp_path / "input" / "f1.jpg"), np.full((48, 64, 3), 90, np.uint8))
            code = proc.wait(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    # then exit 2 with one line about the GPU, gpuLost on `alerts`, and the frame neither failed nor lost
    assert code == 2, text
    assert "Traceback" not in text
    assert "worker inference stopped: inference failed on CUDAExecutionProvider: CUDA failure 700" in text
    alerts = [json.loads(line) for line in (tmp_path / "output" / "telemetry.jsonl").read_text().splitlines()]
    assert any(a["output"] == "alerts" and "gpuLost" in json.dumps(a["body"]) for a in alerts)
    assert not (tmp_path / "output" / "failed").exists() or not any((tmp_path / "output" / "failed").rglob("*"))
    assert list((tmp_path / "input").rglob("f1.jpg")), "the frame must stay on the share"
    # and a restart on the CPU serves it
    env_cpu = {**env, "EXECUTION_PROVIDERS": "cpu", "REQUIRE_GPU": "false"}
    with log.open("a") as out:
        proc = subprocess.Popen(gpu_fakes.child_command(None), env=env_cpu, stdout=out, stderr=subprocess.STDOUT)
        try:
            result = tmp_path / "output" / "results" / "f1.jpg.json"
            deadline = time.monotonic() + 40
            while not result.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert result.exists(), log.read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
