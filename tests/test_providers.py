"""The provider chain's plan, GPU presence from device nodes and the CUDA driver, and the TensorRT libraries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_inference.settings import read_settings
from edge_inference.vision.providers import (
    CPU,
    CUDA,
    TENSORRT,
    BatchProfile,
    ChainFacts,
    GpuPresence,
    detect_gpu,
    load_tensorrt_libraries,
    plan_providers,
)

pytestmark = pytest.mark.timeout(30)
ALL = [TENSORRT, CUDA, CPU]
ONE_GPU = GpuPresence(1, "1 CUDA device(s)", ("00000000:3B:00.0",))
NO_GPU = GpuPresence(0, "no NVIDIA device nodes in /dev")


def settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    return read_settings({"STATE_DIR": str(tmp_path / "state"), **env})


def plan(s, gpu: GpuPresence = ONE_GPU, **facts):  # type: ignore[no-untyped-def]
    attempts = plan_providers(s, ChainFacts(ALL, gpu, **facts))
    return {a.provider: a for a in attempts}, [(a.provider, a.outcome) for a in attempts]


def test_auto_on_a_gpu_is_tensorrt_if_enabled_then_cuda_then_cpu_each_with_its_options(tmp_path: Path) -> None:
    assert plan(settings(tmp_path))[1] == [(CUDA, "planned"), (CPU, "planned")]
    profile = BatchProfile("images", 640, 640, 8)
    attempts, order = plan(settings(tmp_path, TENSORRT_ENABLED="true", CUDA_DEVICE_ID="0"), profile=profile)
    assert order == [(TENSORRT, "planned"), (CUDA, "planned"), (CPU, "planned")]
    trt = attempts[TENSORRT]
    assert trt.options["trt_engine_cache_enable"] is True
    assert trt.options["trt_engine_cache_path"] == str(tmp_path / "state" / "tensorrt-cache")
    assert trt.options["trt_fp16_enable"] is True and trt.options["device_id"] == 0
    # one engine for batch 1..8, tuned for the full batch
    assert trt.options["trt_profile_min_shapes"] == "images:1x3x640x640"
    assert trt.options["trt_profile_opt_shapes"] == trt.options["trt_profile_max_shapes"] == "images:8x3x640x640"
    # TensorRT's session hands what it cannot take to CUDA, with CUDA's own options, then to the CPU
    assert [name for name, _ in trt.chain] == [TENSORRT, CUDA, CPU]
    assert trt.chain[1][1] == attempts[CUDA].options
    cuda = attempts[CUDA].options
    assert cuda["cudnn_conv_algo_search"] == "EXHAUSTIVE" and cuda["arena_extend_strategy"] == "kSameAsRequested"


def test_a_fixed_batch_model_gets_no_tensorrt_profile(tmp_path: Path) -> None:
    profile = BatchProfile("images", 640, 640, 4, fixed=True)
    attempts, _ = plan(settings(tmp_path, TENSORRT_ENABLED="true"), profile=profile)
    assert not any(k.startswith("trt_profile") for k in attempts[TENSORRT].options)


def test_auto_without_a_gpu_skips_the_gpu_providers_and_says_why(tmp_path: Path) -> None:
    attempts, order = plan(settings(tmp_path, TENSORRT_ENABLED="true"), gpu=NO_GPU)
    assert order == [(TENSORRT, "skipped"), (CUDA, "skipped"), (CPU, "planned")]
    assert attempts[CUDA].detail == "no GPU: no NVIDIA device nodes in /dev"
    assert attempts[CUDA].options["device_id"] == 0  # kept for the report even when skipped


def test_tensorrt_whose_libraries_do_not_load_is_skipped_and_cuda_still_tried(tmp_path: Path) -> None:
    s = settings(tmp_path, EXECUTION_PROVIDERS="tensorrt,cuda")
    attempts, order = plan(s, tensorrt_missing="libnvinfer.so.10 not found")
    assert order == [(TENSORRT, "skipped"), (CUDA, "planned"), (CPU, "planned")]
    assert attempts[TENSORRT].detail == "libnvinfer.so.10 not found"


def test_an_explicit_list_is_tried_as_given_even_without_a_detected_gpu(tmp_path: Path) -> None:
    _, order = plan(settings(tmp_path, EXECUTION_PROVIDERS="cuda"), gpu=NO_GPU)
    assert order == [(CUDA, "planned"), (CPU, "planned")]


def test_a_device_id_beyond_the_visible_gpus_skips_the_gpu_providers(tmp_path: Path) -> None:
    attempts, order = plan(settings(tmp_path, CUDA_DEVICE_ID="2"))
    assert order == [(CUDA, "skipped"), (CPU, "planned")]
    assert attempts[CUDA].detail == "CUDA_DEVICE_ID=2 but only 1 CUDA device(s) are visible"


def test_providers_missing_from_the_build_are_skipped(tmp_path: Path) -> None:
    attempts = plan_providers(settings(tmp_path), ChainFacts([CPU], ONE_GPU))
    first = attempts[0]
    assert (first.provider, first.outcome, first.detail) == (CUDA, "skipped", "not in this ONNX Runtime build")


def test_gpu_presence_needs_device_nodes(tmp_path: Path) -> None:
    # given a /dev without NVIDIA nodes (a container given no GPU, even where /proc/driver/nvidia shows)
    presence = detect_gpu(tmp_path)
    assert not presence.present and presence.count == 0
    assert presence.reason == f"no NVIDIA device nodes in {tmp_path}: the container was given no GPU"


def test_gpu_presence_then_asks_the_cuda_driver(tmp_path: Path) -> None:
    # given device nodes but no CUDA driver library (this machine has none)
    (tmp_path / "nvidiactl").touch()
    (tmp_path / "nvidia0").touch()
    presence = detect_gpu(tmp_path, driver="libcuda-absent-here.so.1")
    assert not presence.present
    assert presence.reason.startswith("the CUDA driver libcuda-absent-here.so.1 cannot be loaded")


def test_this_machine_has_no_gpu() -> None:
    assert not detect_gpu().present


def test_tensorrt_libraries_are_absent_here_and_named() -> None:
    missing = load_tensorrt_libraries()
    assert missing is not None and "libnvinfer.so.10" in missing and "libnvonnxparser.so.10" in missing


def test_the_cuda_cache_goes_to_state_dir_only_where_there_are_device_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_CACHE_PATH", "-")  # recorded, so that the value the test sets is undone too
    monkeypatch.delenv("CUDA_CACHE_PATH")
    cache = tmp_path / "state" / "cuda-cache"
    detect_gpu(tmp_path / "no-nodes", cuda_cache=cache)
    assert "CUDA_CACHE_PATH" not in os.environ and not cache.exists()
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").touch()
    (dev / "nvidia0").touch()
    detect_gpu(dev, driver="libcuda-absent-here.so.1", cuda_cache=cache)
    assert os.environ["CUDA_CACHE_PATH"] == str(cache) and cache.is_dir()
