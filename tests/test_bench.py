"""The benchmark's own pieces: the YOLOv8n-shaped builder, the latency helpers, and a `--quick` smoke run."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bench.run_bench import batches_from_inference, drop_to_result_ms, latency_summary, percentile
from bench.yolov8n_model import build_yolov8n
from tools.module_process import module_process_env

ROOT = Path(__file__).resolve().parent.parent


def test_yolov8n_builder_gives_the_yolov8_layout_for_a_dynamic_batch(tmp_path: Path) -> None:
    # given a YOLOv8n-shaped model built for 320x320 input
    built = build_yolov8n(tmp_path / "y.onnx", 320)
    session = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    # when a batch of 2 runs
    out = session.run(None, {"images": np.full((2, 3, 320, 320), 0.5, np.float32)})[0]
    # then it is [B, 4 + 80, (40^2 + 20^2 + 10^2)] with sigmoid scores, and YOLOv8n's size
    assert out.shape == (2, 84, 2100)
    assert float(out[:, 4:].min()) >= 0.0 and float(out[:, 4:].max()) <= 1.0
    assert np.isfinite(out).all()
    assert 3.0e6 < built.params < 3.3e6
    meta = dict(session.get_modelmeta().custom_metadata_map)
    names = ast.literal_eval(meta["names"])
    assert isinstance(names, dict) and len(names) == 80 and names[0] == "person"


def test_yolov8n_builder_flops_are_in_the_yolov8n_class(tmp_path: Path) -> None:
    built = build_yolov8n(tmp_path / "y.onnx", 640)
    assert 8.0 < built.gflops < 9.5
    assert built.anchors == 8400


def test_percentiles_and_latency_summary() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([], 50) is None
    summary = latency_summary(values)
    assert summary == {"n": 100, "mean": 50.5, "p50": 50.5, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert latency_summary([])["p50"] is None


def test_drop_to_result_latency_and_batches() -> None:
    dropped = {"a.jpg": 10.0, "b.jpg": 10.5, "c.jpg": 11.0}
    seen = {"a.jpg": 10.2, "b.jpg": 10.9}  # c has no result yet
    assert drop_to_result_ms(dropped, seen) == pytest.approx([200.0, 400.0])
    # frames of one batch carry the same inference time
    assert batches_from_inference([40.0, 40.0, 40.0, 12.5]) == [(12.5, 1), (40.0, 3)]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_bench_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = module_process_env()
    cmd = [sys.executable, str(ROOT / "bench" / "run_bench.py"), "--quick", "--models", "yolov8n"]
    cmd += ["--sizes", "480p", "--frames", "8", "--light-frames", "3", "--seconds", "0.3", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("machine", "cases", "goals", "loadStart", "loadEnd", "models"):
        assert key in report
    assert report["machine"]["cores"] >= 1 and report["machine"]["onnxruntime"]
    case = report["cases"][0]
    for key in ("ceiling", "naive", "module", "ratios", "microMs", "lightLatencyGoal", "loadStart", "loadEnd"):
        assert key in case
    sat = case["module"]["saturated"]
    assert sat["completed"] == 8 and sat["fps"] > 0
    assert sat["stagesMs"]["errors"] == 0
    for stage in ("queue", "read", "decode", "inference", "postprocess", "total"):
        assert sat["stagesMs"][stage] is not None
    assert case["module"]["light"]["latencyMs"]["n"] == 3
    assert case["module"]["peakRssMiB"] > 0
    assert case["module"]["exitCode"] == 0
    assert report["models"]["yolov8n"]["params"] > 3_000_000


@pytest.mark.timeout(120)
def test_a_gpu_bench_where_no_gpu_starts_says_so_in_one_line(tmp_path: Path) -> None:
    # given --providers cuda,cpu on this GPU-less machine (a GPU run must never measure the CPU by mistake)
    cmd = [sys.executable, str(ROOT / "bench" / "run_bench.py"), "--quick", "--models", "demo", "--sizes", "480p"]
    cmd += ["--providers", "cuda,cpu", "--out", str(tmp_path / "b.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=110)
    # then exit 2 with the reason, no traceback, no report
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bench: cannot load the model: REQUIRE_GPU=true but no GPU execution provider started" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "b.json").exists()


def test_the_figures_are_drawn_from_the_committed_results(tmp_path: Path) -> None:
    """bench/figures.py draws bench.png from a bench JSON and soak.png from a soak CSV (with its JSON's faults)."""
    from bench.figures import RESULTS, draw_bench, draw_soak, newest, newest_bench, read_soak

    bench_json, soak_csv = newest_bench(), newest("soak-*.csv")
    assert bench_json is not None and soak_csv is not None
    report = json.loads(bench_json.read_text())
    bench_png = draw_bench(report, tmp_path / "bench.png")
    samples, faults = read_soak(soak_csv)
    assert samples and faults and soak_csv.parent == RESULTS
    soak_png = draw_soak(samples, faults, tmp_path / "soak.png")
    for png in (bench_png, soak_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    with pytest.raises(ValueError, match="no cases"):
        draw_bench({"cases": []}, tmp_path / "none.png")
