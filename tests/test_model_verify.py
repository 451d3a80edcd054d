"""Verifying a model before it serves (rollout/verify.py): GPU memory through NVML first (a fake NVML: the GPU is
the one edge that cannot run here), the start-up checks and warm-up of a real ONNX Runtime session, and the
self-test frame: strict for a model, a round trip for a candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_inference.errors import RolloutError
from edge_inference.rollout.verify import GPU_MEMORY_HEADROOM_MB, ModelVerifier
from edge_inference.settings import read_settings
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.serving import ModelSlot
from tests.onnx_models import build_constant_model, yolov8_output
from tests.test_health import FakeNvml

pytestmark = pytest.mark.timeout(30)
MB = 1024 * 1024


def verifier(tmp_path: Path, nvml: FakeNvml | None = None) -> tuple[ModelVerifier, Path]:
    boot = build_constant_model(
        tmp_path / "boot.onnx", yolov8_output([(20, 20, 8, 8)], [[0.9, 0.1]]), names="{0: 'a', 1: 'b'}"
    )
    settings = read_settings({"MODEL_PATH": str(boot), "STATE_DIR": str(tmp_path), "EXECUTION_PROVIDERS": "cpu"})
    return ModelVerifier(settings, ModelSlot(OnnxModel(settings)), nvml=nvml), boot


def test_gpu_memory_is_checked_before_a_second_session_is_made(tmp_path: Path) -> None:
    nvml = FakeNvml()
    check, _ = verifier(tmp_path, nvml)
    nvml.used = nvml.total - 600 * MB  # 600 MB free: not enough for 50 MB x 3 + the headroom
    with pytest.raises(RolloutError, match=r"GPU memory: 600 MB free, about 662 MB needed") as refused:
        check.check_gpu_memory(50 * MB, "00000000:3B:00.0")
    assert refused.value.ac == 500 and nvml.shutdowns == 1
    nvml.used = 0
    check.check_gpu_memory(50 * MB, None)  # plenty
    assert 50 * 3 + GPU_MEMORY_HEADROOM_MB == 662
    nvml.init_error = 9  # no driver: NVML cannot say, the session itself will
    check.check_gpu_memory(50 * MB, None)


def test_a_model_with_the_demo_classes_must_find_the_known_defects(tmp_path: Path) -> None:
    check, _ = verifier(tmp_path)
    blind = build_constant_model(
        tmp_path / "blind.onnx",
        yolov8_output([(5, 5, 2, 2)], [[0.0, 0.0, 0.0]]),
        names="{0: 'scratch', 1: 'dent', 2: 'spot'}",
    )
    sha = OnnxModel(check.settings, path=blind).sha256
    with pytest.raises(RolloutError, match="self-test failed: 0 of 2 known defects found") as refused:
        check.load(blind, labels=None, identity=("blind", "1"), sha256=sha)
    assert refused.value.ac == 400
    candidate = check.load(blind, labels=None, identity=("blind", "1"), sha256=sha, strict=False)
    assert candidate.name == "blind" and candidate.provider == "CPUExecutionProvider"


def test_the_model_checks_refuse_with_400_and_the_phases_are_told(tmp_path: Path) -> None:
    check, boot = verifier(tmp_path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(RolloutError, match="cannot serve it") as refused:
        check.load(broken, labels=None, identity=("x", "1"), sha256="0" * 64)
    assert refused.value.ac == 400
    phases: list[str] = []
    model = check.load(
        boot, labels=None, identity=("again", "2"), sha256="1" * 64, on_checked=lambda: phases.append("warming")
    )
    assert phases == ["warming"] and (model.name, model.version, model.sha256) == ("again", "2", "1" * 64)
