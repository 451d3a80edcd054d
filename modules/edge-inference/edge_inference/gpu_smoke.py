"""The GPU smoke test: run it first on a new GPU box (`make gpu-smoke`, or inside the image:
`docker run --rm --gpus all --entrypoint python <image> -m edge_inference.gpu_smoke`). Under two minutes.

It loads the model the way the module does with REQUIRE_GPU=true, prints the ONNX Runtime version, the provider
chain and the options of the active providers, runs batch 1 and the largest batch with and without IO binding
(median time and the largest output difference against the CPU provider on the same input), and reads the card
through NVML (found by the CUDA device's PCI bus id). Exit status: 0 all good, 1 something is off (each failed
check is printed), 3 no GPU visible (why is printed). `--out FILE` (or $OUT/gpu-smoke.json) keeps the report.

    python -m edge_inference.gpu_smoke [--model PATH] [--providers auto|cuda,cpu|tensorrt,cuda,cpu] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_inference.errors import EdgeInferenceError
from edge_inference.log import setup_logging
from edge_inference.ops.alarms import AlarmRegistry
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.publisher import NullSink
from edge_inference.settings import read_settings
from edge_inference.vision.model import OnnxModel, build_info
from edge_inference.vision.providers import TENSORRT, detect_gpu

EXIT_OK, EXIT_OFF, EXIT_NO_GPU = 0, 1, 3
# Largest |GPU - CPU| over max(1, max |CPU|): TF32 matmuls on CUDA stay well inside 1e-2; fp16 TensorRT inside 5e-2.
TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2}


class Report:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {"host": socket.gethostname(), "checks": []}

    def say(self, text: str) -> None:
        print(text, flush=True)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.data["checks"].append({"check": name, "ok": ok, "detail": detail})
        self.say(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
        return ok

    @property
    def failed(self) -> list[str]:
        return [c["check"] for c in self.data["checks"] if not c["ok"]]


def _median_ms(model: OnnxModel, x: np.ndarray, runs: int) -> tuple[float, np.ndarray]:
    out = model.run(x)[0]  # once more for this binding mode's buffers
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = model.run(x)[0]
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 3), out


def _relative_diff(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a64 - b64)) / max(1.0, float(np.max(np.abs(b64)))))


def _nvml(report: Report, bus_id: str | None, index: int) -> None:
    from edge_inference.ops.health import GpuMonitor

    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        report.check("NVML", False, f"cannot initialise ({exc}): GPU health alarms would be off")
        return
    try:
        handle = pynvml.nvmlDeviceGetHandleByPciBusId_v2(bus_id) if bus_id else pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        info = {
            "name": str(pynvml.nvmlDeviceGetName(handle)),
            "driver": str(pynvml.nvmlSystemGetDriverVersion()),
            "pciBusId": bus_id,
            "temperatureC": int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            "memoryUsedMiB": int(memory.used) // 2**20,
            "memoryTotalMiB": int(memory.total) // 2**20,
        }
        report.data["nvml"] = info
        report.check("NVML", True, ", ".join(f"{k} {v}" for k, v in info.items()))
    except Exception as exc:
        report.check("NVML", False, f"cannot read the CUDA device {bus_id or index} ({exc})")
        return
    finally:
        pynvml.nvmlShutdown()
    metrics = MetricsRegistry()
    monitor = GpuMonitor(index, metrics, AlarmRegistry(NullSink(), metrics), pci_bus_id=bus_id)
    monitor.check_now()
    report.check("module GPU watch", monitor.available, "reads the card" if monitor.available else "is off")
    monitor.stop()


def run(args: argparse.Namespace, report: Report) -> int:
    started = time.monotonic()
    info = build_info()
    report.data["build"] = info
    report.say(
        f"onnxruntime {info['onnxruntime']} (built with CUDA {info['cudaBuild']}), providers {info['available']}"
    )
    report.say(f"CUDA_DEVICE_ORDER={os.environ.get('CUDA_DEVICE_ORDER', '(unset: fastest first)')}")
    gpu = detect_gpu()
    report.data["gpu"] = {"count": gpu.count, "reason": gpu.reason, "pciBusIds": list(gpu.pci_bus_ids)}
    state = Path(args.state or tempfile.mkdtemp(prefix="gpu-smoke-"))
    env = {**os.environ, "STATE_DIR": str(state), "REQUIRE_GPU": "true", "EXECUTION_PROVIDERS": args.providers}
    if args.model:
        env["MODEL_PATH"] = str(args.model)
    settings = read_settings(env)
    report.say(f"model {settings.model_path}; loading with REQUIRE_GPU=true, EXECUTION_PROVIDERS={args.providers}")
    t0 = time.monotonic()
    try:
        model = OnnxModel(settings)
    except EdgeInferenceError as exc:
        report.data["refusal"] = str(exc)
        report.say(f"the module refuses to start: {exc}")
        if not gpu.present:
            report.say(f"no GPU: {gpu.reason}")
            return EXIT_NO_GPU
        report.check("GPU provider", False, str(exc))
        return EXIT_OFF
    report.data["loadSeconds"] = round(time.monotonic() - t0, 2)
    report.data["runtime"] = model.runtime_info()
    report.data["providerOptions"] = model.provider_options()
    report.say(f"active providers {list(model.active_providers)}, loaded and warmed in {report.data['loadSeconds']} s")
    for attempt in model.attempts:
        report.say(f"  chain: {attempt.provider} {attempt.outcome} {attempt.detail}".rstrip())
    for name, options in report.data["providerOptions"].items():
        report.say(f"  {name} options: {json.dumps(options, sort_keys=True)}")
    report.check("GPU provider", model.on_gpu, model.provider)
    report.check("warm-up", model.warmed == model.batch_shapes, f"batch sizes {list(model.warmed)}")
    cpu = OnnxModel(
        settings.with_overrides(
            execution_providers=("CPUExecutionProvider",), require_gpu=False, batch_size=model.serving_batch
        )
    )
    fp16 = model.provider == TENSORRT and settings.tensorrt_fp16
    tolerance = TOLERANCE["fp16" if fp16 else "fp32"]
    rng = np.random.default_rng(17)
    report.data["runs"] = []
    for batch in sorted({1, model.serving_batch}):
        x = rng.random((batch, 3, *model.input_hw)).astype(model.input.dtype)
        reference = cpu.run(x)[0]
        results: dict[bool, np.ndarray] = {}
        for binding in (False, True):
            model.io_binding = binding
            ms, results[binding] = _median_ms(model, x, args.runs)
            diff = _relative_diff(results[binding], reference)
            row = {
                "batch": batch,
                "ioBinding": binding,
                "medianMs": ms,
                "msPerFrame": round(ms / batch, 3),
                "maxRelDiffVsCpu": diff,
            }
            report.data["runs"].append(row)
            report.check(
                f"batch {batch} {'with' if binding else 'without'} IO binding",
                diff <= tolerance,
                f"{ms} ms ({row['msPerFrame']} ms/frame), max difference vs CPU {diff:.2e} (<= {tolerance:g})",
            )
        same = _relative_diff(results[True], results[False])
        report.check(f"batch {batch} IO binding = plain run", same <= 1e-6, f"difference {same:.1e}")
    model.io_binding = False
    _nvml(report, model.pci_bus_id, settings.cuda_device_id)
    report.data["seconds"] = round(time.monotonic() - started, 1)
    report.say(
        f"done in {report.data['seconds']} s: " + ("all good" if not report.failed else f"FAILED {report.failed}")
    )
    return EXIT_OFF if report.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: MODEL_PATH or the bundled demo model)")
    parser.add_argument("--providers", default="auto", help="EXECUTION_PROVIDERS to load with (default auto)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per case (default 20)")
    parser.add_argument("--state", help="STATE_DIR for caches (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="JSON report (default: $OUT/gpu-smoke.json when $OUT is set)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    report = Report()
    code = run(args, report)
    report.data["exitCode"] = code
    out = args.out or (Path(os.environ["OUT"]) / "gpu-smoke.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.data, indent=1) + "\n")
        print(f"report: {out}")
    print(f"exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
