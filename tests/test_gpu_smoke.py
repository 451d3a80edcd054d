"""`make gpu-smoke`: on this machine it reports "no GPU" with exit 3; against the faked GPU every check runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from edge_inference import gpu_smoke
from tests import gpu_fakes
from tests.gpu_fakes import FakeGpuSession

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


def test_smoke_reports_no_gpu_cleanly_with_exit_3(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_smoke.py"), "--out", str(out), "--state", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == gpu_smoke.EXIT_NO_GPU, done.stdout + done.stderr
    assert "onnxruntime 1.26.0" in done.stdout
    assert "no GPU: no NVIDIA device nodes in /dev" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["exitCode"] == 3 and report["gpu"]["count"] == 0
    assert report["refusal"].startswith("REQUIRE_GPU=true but no GPU execution provider started")


def test_smoke_on_a_faked_gpu_runs_every_check_and_fails_on_nvml_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a CUDA session that starts (faked: a CPU session saying CUDA) and no NVML on this machine
    monkeypatch.setattr(FakeGpuSession, "fail_after", None)
    monkeypatch.setattr(ort, "InferenceSession", gpu_fakes.session_factory)
    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", gpu_fakes.ortvalue_on_host)
    monkeypatch.setattr(gpu_smoke, "setup_logging", lambda level: None)
    out = tmp_path / "smoke.json"
    # when the smoke test runs with cuda,cpu
    code = gpu_smoke.main(["--providers", "cuda,cpu", "--runs", "3", "--out", str(out), "--state", str(tmp_path / "s")])
    # then the provider, the warm-up, batch 1 and 8 with and without IO binding pass, and NVML's absence fails it
    report = json.loads(out.read_text())
    checks = {c["check"]: c["ok"] for c in report["checks"]}
    assert checks["GPU provider"] and checks["warm-up"]
    for batch in (1, 8):
        assert checks[f"batch {batch} without IO binding"] and checks[f"batch {batch} with IO binding"]
        assert checks[f"batch {batch} IO binding = plain run"]
    assert checks["NVML"] is False and code == gpu_smoke.EXIT_OFF == report["exitCode"]
    assert [r["batch"] for r in report["runs"]] == [1, 1, 8, 8]
    assert all(r["maxRelDiffVsCpu"] == 0.0 for r in report["runs"])
    assert "CUDAExecutionProvider options" in capsys.readouterr().out
