"""The model runner on real ONNX Runtime: provider choice and fallback, start-up checks, batching."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from edge_inference.errors import ModelError, ProviderError
from edge_inference.settings import read_settings
from edge_inference.vision.model import CPU, CUDA, OnnxModel, parse_names
from tests.onnx_models import build_constant_model, yolov8_output

pytestmark = pytest.mark.timeout(30)


def settings(tmp_path: Path, model: Path, **env: str):  # type: ignore[no-untyped-def]
    return read_settings({"MODEL_PATH": str(model), "STATE_DIR": str(tmp_path / "state"), **env})


def tiny(tmp_path: Path, **kwargs) -> Path:  # type: ignore[no-untyped-def]
    out = yolov8_output([(32, 32, 10, 10)], [[0.9, 0.1]])
    return build_constant_model(tmp_path / "m.onnx", out, names="{0: 'a', 1: 'b'}", **kwargs)


def test_requested_cuda_that_cannot_load_is_recorded_and_the_cpu_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given no GPU here: ONNX Runtime cannot load the CUDA provider
    caplog.set_level(logging.INFO)
    # when the operator asks for cuda,cpu
    model = OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="cuda,cpu"))
    # then the chain says what happened to CUDA, the CPU serves, and both are reported
    assert model.provider == CPU
    assert "execution provider CUDAExecutionProvider failed: ONNX Runtime could not load it" in caplog.text
    chain = model.runtime_info()["providerChain"]
    assert [(a["provider"], a["outcome"]) for a in chain] == [(CUDA, "failed"), (CPU, "active")]
    assert model.runtime_info()["provider"] == CPU
    assert model.gpu_fault is not None and model.gpu_fault.startswith(CUDA)


def test_require_gpu_refuses_to_start_on_cpu_with_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"REQUIRE_GPU=true but no GPU execution provider started") as err:
        OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="cuda,cpu", REQUIRE_GPU="true"))
    assert "\n" not in str(err.value) and "CUDAExecutionProvider failed" in str(err.value)


def test_require_gpu_with_a_cpu_only_list_says_the_list_names_no_gpu(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"EXECUTION_PROVIDERS=CPUExecutionProvider names no GPU provider"):
        OnnxModel(settings(tmp_path, tiny(tmp_path), EXECUTION_PROVIDERS="cpu", REQUIRE_GPU="true"))


def test_model_is_checked_warmed_and_described(tmp_path: Path) -> None:
    model = OnnxModel(settings(tmp_path, tiny(tmp_path)))
    assert model.input_hw == (64, 64) and model.input.batch is None
    assert model.layout == "yolov8" and model.class_names == ("a", "b")
    assert model.name == "tiny" and model.version == "0.0.1" and len(model.sha256) == 64
    out = model.run(np.zeros((3, 3, 64, 64), np.float32))[0]
    assert out.shape == (3, 6, 16)


def test_fixed_batch_model_is_padded_and_trimmed(tmp_path: Path) -> None:
    model = OnnxModel(settings(tmp_path, tiny(tmp_path, batch=4)))
    assert model.input.batch == 4 and model.max_batch == 4
    assert model.run(np.zeros((2, 3, 64, 64), np.float32))[0].shape == (2, 6, 16)


def test_fp16_input_model_is_served(tmp_path: Path) -> None:
    model = OnnxModel(settings(tmp_path, tiny(tmp_path, input_type=TensorProto.FLOAT16)))
    assert model.input.dtype == np.float16
    assert model.run(np.zeros((1, 3, 64, 64), np.float16))[0].shape == (1, 6, 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": ["batch", 3, 64]}, "has rank 3"),
        ({"input_shape": ["batch", 64, 64, 3]}, "looks NHWC"),
        ({"input_type": TensorProto.INT32}, "expected float32 or float16"),
        ({"input_shape": ["batch", 3, "h", "w"]}, "dynamic size"),
    ],
)
def test_unservable_inputs_are_refused_with_a_clear_message(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        OnnxModel(settings(tmp_path, tiny(tmp_path, **kwargs)))


def test_missing_or_broken_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        OnnxModel(settings(tmp_path, tmp_path / "absent.onnx"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load it"):
        OnnxModel(settings(tmp_path, broken))


def test_labels_file_wins_and_must_match_the_class_count(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("scratch\ndent\n")
    model = OnnxModel(settings(tmp_path, tiny(tmp_path), LABELS_PATH=str(labels)))
    assert model.class_names == ("scratch", "dent")
    labels.write_text("one\ntwo\nthree\n")
    with pytest.raises(ModelError, match="outputs 2 classes but 3 class names"):
        OnnxModel(settings(tmp_path, tiny(tmp_path), LABELS_PATH=str(labels)))


def test_names_metadata_forms() -> None:
    assert parse_names("{0: 'person', 1: 'car'}") == ("person", "car")
    assert parse_names('{"0": "a", "1": "b"}') == ("a", "b")
    assert parse_names("['x', 'y']") == ("x", "y")
    assert parse_names("x, y ,z") == ("x", "y", "z")
    with pytest.raises(ModelError):
        parse_names("{0: 'a', 2: 'b'}")


def test_io_binding_path_gives_the_same_outputs_and_reuses_one_input_per_shape(tmp_path: Path) -> None:
    # The GPU path binds a device input per shape; its code runs on the CPU provider too, so it is tested here.
    s = settings(tmp_path, tiny(tmp_path), BATCH_SIZE="3")
    plain, bound = OnnxModel(s), OnnxModel(s, io_binding=True)
    assert plain.io_binding is False and bound.io_binding is True
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = rng.random((3, 3, 64, 64), dtype=np.float32)
        np.testing.assert_array_equal(plain.run(batch)[0], bound.run(batch)[0])
    # one input value per batch shape warmed (1, 2, 3), refilled in place, not one per run
    assert len(bound._bound._inputs) == 3
