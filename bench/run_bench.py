#!/usr/bin/env python3
"""`make bench`: how close the module gets to the model's own limit, measured side by side in one run.

For each model (the bundled demo model, and a YOLOv8n-shaped network built here with random weights) and each
frame size (1920x1080 and 640x480 JPEGs), on the same frames and with the module's own session options:

- ceiling: ONNX Runtime alone on ready-made input tensors, at the best batch size (the model's limit);
- naive: the classic Flask-sample loop, one frame at a time (PIL open, plain resize, session.run, a Python
  loop over the candidates);
- module: `python -m edge_inference` as a subprocess on a temp share; frames are pre-encoded, staged as hidden
  temp files and renamed into the watched folder (a burst for saturation, a fixed rate for the light load);
  drop-to-result latency is the dropper's rename time to the result file's first sighting (os.scandir poll);
  per-stage times come from the results' `timingsMs`, CPU time and peak RSS from /proc/<pid>.

Ratios are what to read: the machine may be shared, so absolute figures move; load averages are recorded at
the start and end of every case. `--memory` runs the flat-memory soak instead (20,000 small frames).

    bench/run_bench.py                      # full run: JSON under bench/results/, table in docs/PERFORMANCE.md
    bench/run_bench.py --quick              # a few seconds per case (smoke test)
    bench/run_bench.py --models yolov8n --sizes 480p --frames 8 --out /tmp/b.json
    bench/run_bench.py --providers cuda,cpu # GPU box: EXECUTION_PROVIDERS for the ceiling, naive and module,
                                            # with REQUIRE_GPU (a GPU run never measures the CPU by mistake);
                                            # tensorrt,cuda,cpu for TensorRT; JSON to --out, else $OUT/, else
                                            # bench/results/. Without the `onnx` package (a bare GPU box) pass
                                            # --yolov8n-model with a file built elsewhere (bench/yolov8n_model.py).
    bench/run_bench.py --memory             # RSS over 20,000 frames
    bench/run_bench.py --models none --smb  # only the SMB share case (bench/smb_latency.py)
    bench/run_bench.py --models none --tiling  # only the tiling case (bench/tiling_bench.py)
    bench/run_bench.py --case share-scale   # only the share-scale case (bench/share_scale.py; about 7 minutes)
    bench/run_bench.py --models none --rollout   # only the model rollout case (bench/rollout_bench.py)

Every full run ends with the SMB case (drop-to-result latency of frames written over SMB, bench/smb_latency.py),
the tiling case (recall of defects a few pixels wide on 4K frames without and with tiling, and its fps cost,
bench/tiling_bench.py), the model rollout case (what a candidate and a swap cost the active model,
bench/rollout_bench.py), the share-scale case (idle polling CPU over 10,000 and 100,000 kept frames, a
million-frame backlog, bench/share_scale.py), whose table has a section of its own in docs/PERFORMANCE.md, and the
live-page case (module fps with the page open in headless Chromium against without it, bench/page_case.py;
`--models none --page` runs it alone). A full run draws docs/images/bench.png (bench/figures.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "modules" / "edge-inference"
for _p in (str(MODULE_DIR), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tools.module_process import module_process_env  # noqa: E402

DEMO_MODEL = MODULE_DIR / "models" / "demo-defects.onnx"
RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "PERFORMANCE.md"
DOC_BEGIN = "<!-- bench:table:begin (written by bench/run_bench.py) -->"
DOC_END = "<!-- bench:table:end -->"
SCALE_BEGIN = "<!-- bench:share-scale:begin (written by bench/run_bench.py) -->"
SCALE_END = "<!-- bench:share-scale:end -->"
SIZES = {"1080p": (1920, 1080), "480p": (640, 480)}
MODELS = ("demo", "yolov8n")
SETTLE_SECONDS = 0.05
STAGES = ("queue", "read", "decode", "inference", "postprocess", "total")
GOAL_CEILING_RATIO = 0.85
GOAL_NAIVE_RATIO = 2.0


# -------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """n, mean, p50, p95, p99, max of a list of milliseconds (rounded to 0.1 ms; None when empty)."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    vals = list(values_ms)
    return {
        "n": len(vals),
        "mean": r(float(np.mean(vals))) if vals else None,
        "p50": r(percentile(vals, 50)),
        "p95": r(percentile(vals, 95)),
        "p99": r(percentile(vals, 99)),
        "max": r(max(vals)) if vals else None,
    }


def drop_to_result_ms(dropped: dict[str, float], seen: dict[str, float]) -> list[float]:
    """Latency per frame in ms: when its result appeared minus when it was dropped (frames with both)."""
    return [(seen[name] - t) * 1000 for name, t in dropped.items() if name in seen]


def batches_from_inference(values: Iterable[float]) -> list[tuple[float, int]]:
    """(batch ms, frames) per batch: every frame of a batch carries the same `inference` value."""
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sorted(counts.items())


# ------------------------------------------------------------------------------------------------ machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    return {
        "host": socket.gethostname(),
        "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "ramGiB": round(int(mem.group(1)) / 1024**2, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "availableProviders": ort.get_available_providers(),
        "gpu": gpu_name(),
    }


def gpu_name() -> str | None:
    """The CUDA device's name and driver through NVML, when there is a GPU (None otherwise)."""
    from edge_inference.vision.providers import detect_gpu

    if not detect_gpu().present:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return f"{pynvml.nvmlDeviceGetName(handle)}, driver {pynvml.nvmlSystemGetDriverVersion()}"
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing: still a GPU
        return f"GPU (NVML: {exc})"


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ------------------------------------------------------------------------------------------------- frames


def make_frames(width: int, height: int, count: int, seed: int = 7) -> list[bytes]:
    """`count` distinct JPEG frames: the synthetic defect generator when present, else textured noise."""
    return frames_with_truth(width, height, count, seed)[0]


def frames_with_truth(width: int, height: int, count: int, seed: int = 7) -> tuple[list[bytes], list[list[Any]] | None]:
    """`count` distinct JPEG frames (quality 90) and the defects drawn into each (None without the generator)."""
    rng = np.random.default_rng(seed)
    try:
        from tools.synthetic import encode_jpeg, generate_frame
    except ImportError:
        generate_frame = None  # type: ignore[assignment]
    frames: list[bytes] = []
    truths: list[list[Any]] = []
    for _ in range(count):
        if generate_frame is not None:
            image, truth = generate_frame(rng, width, height)
            frames.append(encode_jpeg(image, 90))
            truths.append(list(truth))
        else:
            import cv2

            coarse = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
            image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
            image = cv2.add(image, rng.integers(0, 20, image.shape, dtype=np.uint8))
            frames.append(bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]))
    return frames, (truths if generate_frame is not None else None)


# ------------------------------------------------------------------------------------------ model setups


@dataclass
class ModelCase:
    key: str  # demo | yolov8n
    path: Path
    note: str
    params: int | None = None
    gflops: float | None = None


def prepare_models(
    keys: Sequence[str], workdir: Path, wait_demo_s: float, yolov8n_file: Path | None = None
) -> tuple[list[ModelCase], list[str]]:
    cases: list[ModelCase] = []
    notes: list[str] = []
    for key in keys:
        if key == "yolov8n" and yolov8n_file is not None:
            cases.append(ModelCase(key, yolov8n_file, "YOLOv8n-shaped, random weights, 640x640 (prebuilt file)"))
        elif key == "yolov8n":
            try:
                from bench.yolov8n_model import build_yolov8n
            except ImportError as exc:  # a bare GPU box has the runtime packages only
                notes.append(f"yolov8n skipped: {exc} (pass --yolov8n-model with a prebuilt file)")
                print(notes[-1], flush=True)
                continue
            built = build_yolov8n(workdir / "yolov8n-random.onnx", 640)
            print(
                f"yolov8n-shaped model: {built.params:,} parameters, {built.gflops:.2f} GFLOPs at 640x640, "
                f"output [B, 84, {built.anchors}]",
                flush=True,
            )
            cases.append(
                ModelCase(key, built.path, "YOLOv8n-shaped, random weights, 640x640", built.params, built.gflops)
            )
        elif key == "demo":
            deadline = time.monotonic() + wait_demo_s
            while not DEMO_MODEL.is_file() and time.monotonic() < deadline:
                time.sleep(5)
            if DEMO_MODEL.is_file():
                try:
                    import onnx

                    params: int | None = sum(int(np.prod(t.dims)) for t in onnx.load(str(DEMO_MODEL)).graph.initializer)
                except ImportError:
                    params = None
                cases.append(ModelCase(key, DEMO_MODEL, "bundled demo-defects.onnx", params))
            else:
                notes.append(f"demo model {DEMO_MODEL.relative_to(ROOT)} not present: demo cases skipped")
                print(notes[-1], flush=True)
        else:
            raise SystemExit(f"unknown model {key!r}: expected {', '.join(MODELS)}")
    return cases, notes


def load_module_model(path: Path, providers: str, state_dir: Path) -> Any:
    """The module's own OnnxModel: the same providers and session options as `python -m edge_inference`."""
    from edge_inference.settings import Settings, parse_providers
    from edge_inference.vision.model import OnnxModel

    return OnnxModel(
        Settings(
            model_path=path,
            execution_providers=parse_providers(providers),
            state_dir=state_dir,
            require_gpu=wants_gpu(providers),
        )
    )


def wants_gpu(providers: str) -> bool:
    """A run asked for a GPU provider: REQUIRE_GPU, so it fails instead of measuring the CPU under a GPU name."""
    return any(p.strip().lower() in ("cuda", "tensorrt", "trt") for p in providers.split(","))


# ---------------------------------------------------------------------------------------------- ceiling


def measure_ceiling(
    model: Any, tensors: list[np.ndarray], seconds: float, batches: Sequence[int] = (1, 2, 4, 8)
) -> dict[str, Any]:
    """ORT alone on ready tensors at batch 1, 2, 4, 8 (what the model allows): frames/s per batch, best."""
    fixed = model.input.batch
    candidates = [fixed] if fixed is not None else list(batches)
    per_batch: dict[str, Any] = {}
    single_ms: float | None = None
    for b in candidates:
        x = np.concatenate([tensors[i % len(tensors)] for i in range(b)])
        model.run(x)  # warm this shape
        times: list[float] = []
        end = time.perf_counter() + seconds
        while len(times) < 3 or time.perf_counter() < end:
            t0 = time.perf_counter()
            model.run(x)
            times.append(time.perf_counter() - t0)
        median = float(np.median(times))
        per_batch[str(b)] = {"fps": round(b / median, 2), "msPerBatch": round(median * 1000, 2), "runs": len(times)}
        if b == 1 or single_ms is None:
            single_ms = median * 1000
    best = max(per_batch, key=lambda k: per_batch[k]["fps"])
    return {
        "fps": per_batch[best]["fps"],
        "bestBatch": int(best),
        "singleFrameMs": round(single_ms or 0.0, 2),
        "perBatch": per_batch,
    }


# ------------------------------------------------------------------------------------------------ naive


def _load_opencv(path: Path, size_wh: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """cv2.imdecode, cv2.resize to the input size (no letterbox), RGB CHW in 0..1: what a script on OpenCV does."""
    import cv2

    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    resized = cv2.resize(image, size_wh)
    return resized[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0, w, h


def _load_pil(path: Path, size_wh: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """PIL open, plain resize, RGB CHW in 0..1: the classic Flask ONNX sample."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    return np.asarray(image.resize(size_wh), dtype=np.float32).transpose(2, 0, 1)[None] / 255.0, w, h


NAIVE_LOADERS = {"opencv": _load_opencv, "pil": _load_pil}


def run_naive(
    model: Any, files: list[Path], out_dir: Path, seconds: float, confidence: float, decoder: str = "opencv"
) -> dict[str, Any]:
    """A plain serving loop, one frame at a time, on the module's session (same options): decode (OpenCV, as
    the module decodes - the fair baseline; or PIL, the classic Flask sample), plain resize, `session.run`, a
    Python loop over the candidates, `cv2.dnn.NMSBoxes`, a JSON file per frame."""
    import cv2

    load = NAIVE_LOADERS[decoder]
    session = model.session
    name = model.input.name
    ih, iw = model.input_hw
    fixed = model.input.batch
    names = model.class_names
    out_dir.mkdir(parents=True, exist_ok=True)
    per_frame: list[float] = []
    model_ms: list[float] = []
    detections = 0
    start = time.perf_counter()
    i = 0
    while i < 3 or time.perf_counter() - start < seconds:
        path = files[i % len(files)]
        t0 = time.perf_counter()
        x, w, h = load(path, (iw, ih))
        if fixed is not None and fixed > 1:
            x = np.concatenate([x, np.zeros((fixed - 1, *x.shape[1:]), np.float32)])
        t1 = time.perf_counter()
        out = session.run(None, {name: x})[0][0]
        t2 = time.perf_counter()
        boxes, scores, classes = [], [], []
        for row in out.T:  # [4+C, N] -> one candidate per row
            cls_scores = row[4:]
            c = int(np.argmax(cls_scores))
            score = float(cls_scores[c])
            if score >= confidence:
                cx, cy, bw, bh = (float(v) for v in row[:4])
                sx, sy = w / iw, h / ih
                boxes.append([(cx - bw / 2) * sx, (cy - bh / 2) * sy, bw * sx, bh * sy])
                scores.append(score)
                classes.append(c)
        keep = cv2.dnn.NMSBoxes(boxes, scores, confidence, 0.45) if boxes else []
        result = [
            {
                "label": names[classes[k]] if classes[k] < len(names) else str(classes[k]),
                "confidence": scores[k],
                "box": [boxes[k][0], boxes[k][1], boxes[k][0] + boxes[k][2], boxes[k][1] + boxes[k][3]],
            }
            for k in np.asarray(keep).ravel().tolist()
        ]
        detections += len(result)
        (out_dir / f"{path.name}.json").write_text(json.dumps({"detections": result}))
        per_frame.append((time.perf_counter() - t0) * 1000)
        model_ms.append((t2 - t1) * 1000)
        i += 1
    wall = time.perf_counter() - start
    return {
        "decoder": decoder,
        "fps": round(len(per_frame) / wall, 2),
        "frames": len(per_frame),
        "msPerFrame": latency_summary(per_frame),
        "modelMsPerFrame": round(float(np.mean(model_ms)), 2),
        "detectionsPerFrame": round(detections / len(per_frame), 2),
    }


# ---------------------------------------------------------------------------------------- reduced decode


def _match(a: list[Any], b: list[Any], min_iou: float = 0.5) -> list[tuple[Any, Any]]:
    """Pairs of (a, b) detections of the same class, greedy by a's confidence, IoU >= min_iou, each b once."""
    from edge_inference.control.selftest import iou

    pairs, used = [], set()
    for det in sorted(a, key=lambda d: -getattr(d, "confidence", 1.0)):  # truth has no confidence
        best, best_iou = None, min_iou
        for j, other in enumerate(b):
            if j not in used and other.class_id == det.class_id and iou(det.box, other.box) >= best_iou:
                best, best_iou = j, iou(det.box, other.box)
        if best is not None:
            used.add(best)
            pairs.append((det, b[best]))
    return pairs


def reduced_decode_accuracy(model: Any, frames: list[bytes], truths: list[list[Any]] | None) -> dict[str, Any]:
    """What JPEG_REDUCED_DECODE costs on these frames, with the module's own decode, transform and decoder
    (confidence 0.5, IoU 0.45): the mean shift of a box's corners between the exact and the reduced decode
    (original pixels, boxes matched by class and IoU >= 0.5), the share of the exact decode's detections the
    reduced one still finds, and - where the frames' truth is known (the demo model) - the recall of each."""
    from edge_inference.vision import decode as decoding
    from edge_inference.vision.postprocess import DecodeOptions
    from edge_inference.vision.preprocess import prepare_frame

    options = DecodeOptions(confidence=0.5, iou=0.45, max_detections=300)

    def detect(data: bytes, reduced: bool) -> list[Any]:
        header = decoding.check_header(data, 10**9)
        scale = model.transform.scale(*header.display_size) if reduced else None
        frame = decoding.decode_checked(data, header, scale)
        tensor, box = prepare_frame(frame.image, (frame.width, frame.height), model.transform)
        outs = model.run(tensor)
        one = outs if model.layout == "rows" else [o[0] for o in outs]
        return list(model.decoder.decode(one, box, options).detections)

    shifts: list[float] = []
    exact_total = found_again = 0
    truth_total = truth_exact = truth_reduced = 0
    factors = set()
    for i, data in enumerate(frames):
        header = decoding.check_header(data, 10**9)
        factors.add(decoding.scale_reduction(model.transform.scale(*header.display_size)))
        exact, reduced = detect(data, False), detect(data, True)
        pairs = _match(exact, reduced)
        exact_total += len(exact)
        found_again += len(pairs)
        shifts += [float(np.mean(np.abs(np.subtract(a.box, b.box)))) for a, b in pairs]
        if truths is not None:
            truth_total += len(truths[i])
            truth_exact += len(_match(truths[i], exact))
            truth_reduced += len(_match(truths[i], reduced))
    out: dict[str, Any] = {
        "frames": len(frames),
        "reductionFactors": sorted(factors),
        "exactDetections": exact_total,
        "meanBoxShiftPx": round(float(np.mean(shifts)), 2) if shifts else None,
        "p95BoxShiftPx": round(float(np.percentile(shifts, 95)), 2) if shifts else None,
        "recallVsExact": round(found_again / exact_total, 4) if exact_total else None,
    }
    if truths is not None and truth_total:
        out["truthRecallExact"] = round(truth_exact / truth_total, 4)
        out["truthRecallReduced"] = round(truth_reduced / truth_total, 4)
        out["truthRecallChange"] = round((truth_reduced - truth_exact) / truth_total, 4)
    return out


# ------------------------------------------------------------------------------------------ micro costs


def micro_costs(model: Any, frames: list[bytes]) -> dict[str, float]:
    """Single-threaded ms per frame of each step the module does, on the same frames (medians)."""
    import cv2

    from edge_inference.share.ledger import Ledger
    from edge_inference.vision import decode as decoding
    from edge_inference.vision import postprocess
    from edge_inference.vision.decode_guard import DecodeGuard
    from edge_inference.vision.preprocess import letterbox, to_tensor

    hw = model.input_hw
    steps: dict[str, list[float]] = {
        k: []
        for k in (
            "header",
            "imdecode",
            "letterbox",
            "toTensor",
            "sha256",
            "postprocess",
            "imdecodeReduced2",
            "decodeGuardHop",
            "ledgerAttempt",
        )
    }
    guard = DecodeGuard(10.0, 1 << 30, 2)  # the time/memory budget's own cost: the hop to its decode thread
    ledger_dir = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    ledger = Ledger(ledger_dir / "ledger.sqlite")  # the start counted before each frame (quarantine.py)
    options = postprocess.DecodeOptions(confidence=0.5, iou=0.45, max_detections=300)
    sample = frames[: max(3, min(len(frames), 8))]
    for data in sample:
        t = time.perf_counter()
        decoding.read_header(data)
        steps["header"].append(time.perf_counter() - t)
        buf = np.frombuffer(data, np.uint8)
        t = time.perf_counter()
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        steps["imdecode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_2)
        steps["imdecodeReduced2"].append(time.perf_counter() - t)
        t = time.perf_counter()
        padded, box = letterbox(image, hw)
        steps["letterbox"].append(time.perf_counter() - t)
        t = time.perf_counter()
        tensor = to_tensor(padded, model.input.dtype)
        steps["toTensor"].append(time.perf_counter() - t)
        t = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        steps["sha256"].append(time.perf_counter() - t)
        outs = model.run(tensor)
        one = outs if model.layout == "rows" else [o[0] for o in outs]
        t = time.perf_counter()
        model.decoder.decode(one, box, options)
        steps["postprocess"].append(time.perf_counter() - t)
        for i in range(20):  # cheap steps: more samples
            t = time.perf_counter()
            guard.run(0, lambda: None)
            steps["decodeGuardHop"].append(time.perf_counter() - t)
            t = time.perf_counter()
            ledger.begin_attempt(f"{len(steps['ledgerAttempt'])}-{i}", "cam/frame.jpg", len(data), i)
            steps["ledgerAttempt"].append(time.perf_counter() - t)
    ledger.close()
    shutil.rmtree(ledger_dir, ignore_errors=True)
    return {k: round(float(np.median(v)) * 1000, 3) for k, v in steps.items()}


# ----------------------------------------------------------------------------------------------- module


def _pid_cpu_seconds(pid: int) -> float:
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    if len(fields) < 13:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid_status_kb(pid: int, key: str) -> int | None:
    m = re.search(rf"^{key}:\s*(\d+) kB", _read(f"/proc/{pid}/status"), re.M)
    return int(m.group(1)) if m else None


class ResultWatcher:
    """Polls the results folder with os.scandir and notes when each result file first appears."""

    def __init__(self, results_dir: Path, interval: float = 0.005) -> None:
        self.results_dir = results_dir
        self.interval = interval
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="result-watcher", daemon=True)

    def __enter__(self) -> ResultWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(self.interval)

    def scan(self) -> None:
        try:
            entries = list(os.scandir(self.results_dir))
        except FileNotFoundError:
            return
        now = time.time()
        for entry in entries:
            name = entry.name
            if name.endswith(".json") and not name.startswith(".") and name[:-5] not in self.seen:
                self.seen[name[:-5]] = now

    def wait_for(self, names: Iterable[str], timeout: float) -> bool:
        wanted = set(names)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if wanted.issubset(self.seen.keys()):
                return True
            time.sleep(0.01)
        return wanted.issubset(self.seen.keys())


class ModuleProcess:
    """`python -m edge_inference` on a temp share, as IoT Edge would run it (no edgeHub: local telemetry)."""

    def __init__(
        self,
        model_path: Path,
        workdir: Path,
        providers: str,
        *,
        disposition: str = "delete",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.input_dir = workdir / "input"
        self.output_dir = workdir / "output"
        self.state_dir = workdir / "state"
        for d in (self.input_dir, self.output_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "module.log"
        env = module_process_env(
            **{
                "MODEL_PATH": str(model_path),
                "INPUT_DIR": str(self.input_dir),
                "OUTPUT_DIR": str(self.output_dir),
                "STATE_DIR": str(self.state_dir),
                "INPUT_DISPOSITION": disposition,
                "SETTLE_SECONDS": str(SETTLE_SECONDS),
                "EXECUTION_PROVIDERS": providers,
                "HTTP_PORT": "0",
                "METRICS_PORT": "0",
                "REPLICA_ID": "bench",
            }
        )
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_inference"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the module exited with {self.proc.returncode}: {self.tail()}")
            if re.search(r"edge-inference \S+ ready", _read(str(self.log_path))):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the module did not become ready within {timeout:.0f} s: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(_read(str(self.log_path)).splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        return _pid_cpu_seconds(self.pid)

    def rss_kb(self) -> int | None:
        return _pid_status_kb(self.pid, "VmRSS")

    def peak_rss_kb(self) -> int | None:
        return _pid_status_kb(self.pid, "VmHWM")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class Dropper:
    """Drops pre-encoded frames atomically: staged as hidden temp files, then renamed into the watched folder."""

    def __init__(self, input_dir: Path) -> None:
        self.input_dir = input_dir
        self.dropped: dict[str, float] = {}

    def stage(self, name: str, data: bytes) -> Path:
        tmp = self.input_dir / f".{name}.x.tmp"
        tmp.write_bytes(data)
        return tmp

    def release(self, name: str, tmp: Path) -> None:
        os.replace(tmp, self.input_dir / name)
        self.dropped[name] = time.time()

    def burst(self, items: list[tuple[str, bytes]]) -> None:
        staged = [(name, self.stage(name, data)) for name, data in items]
        for name, tmp in staged:
            self.release(name, tmp)

    def at_rate(self, items: list[tuple[str, bytes]], interval: float) -> None:
        """One frame every `interval` s, each written just before its rename (a camera's fresh file)."""
        next_at = time.monotonic()
        for name, data in items:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.release(name, self.stage(name, data))
            next_at += interval


def _decode_pool(log: str) -> dict[str, Any]:
    """The decode pool's last sizing in the module's log (workers at once, decode and model ms per frame)."""
    found = re.findall(r"decode pool: (\d+) of (\d+) workers \(decode ([\d.]+) ms per frame, model ([\d.]+) ms", log)
    if not found:
        return {}
    at_once, workers, decode_ms, model_ms = found[-1]
    return {"atOnce": int(at_once), "workers": int(workers), "decodeMs": float(decode_ms), "modelMs": float(model_ms)}


def _read_results(results_dir: Path, names: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads((results_dir / f"{name}.json").read_text()))
    return out


def stage_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ms per frame of each stage from the results' timingsMs, plus the batches the inference ran."""
    summary: dict[str, Any] = {}
    for stage in STAGES:
        vals = [r["timingsMs"][stage] for r in results if stage in r.get("timingsMs", {})]
        summary[stage] = round(float(np.mean(vals)), 2) if vals else None
    batches = batches_from_inference(r["timingsMs"]["inference"] for r in results if "inference" in r["timingsMs"])
    frames = sum(n for _, n in batches)
    if frames:
        summary["meanBatch"] = round(frames / len(batches), 2)
        summary["inferencePerFrame"] = round(sum(ms for ms, _ in batches) / frames, 2)
    summary["errors"] = sum(1 for r in results if r.get("error"))
    summary["detectionsPerFrame"] = round(float(np.mean([r.get("count", 0) for r in results])), 2) if results else None
    return summary


def run_module(
    model: ModelCase,
    frames: list[bytes],
    size_key: str,
    providers: str,
    workdir: Path,
    burst_frames: int,
    light_frames: int,
    light_interval: float | None,
    timeout: float,
    extra_env: dict[str, str] | None = None,
    viewer: Callable[[ModuleProcess], contextlib.AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """Module end to end: warm-up, a saturating burst, then a light fixed-rate load (none for 0 light frames);
    one process. `viewer`: a context open from before the warm-up to the end (the live page in a browser)."""
    env = {"REQUIRE_GPU": str(wants_gpu(providers)).lower(), **(extra_env or {})}
    module = ModuleProcess(model.path, workdir, providers, extra_env=env)
    t_start = time.monotonic()
    module.start()
    startup_s = time.monotonic() - t_start
    results_dir = module.output_dir / "results"
    out: dict[str, Any] = {"startupSeconds": round(startup_s, 2)}
    try:
        with viewer(module) if viewer is not None else contextlib.nullcontext(), ResultWatcher(results_dir) as watcher:
            # warm-up: a few frames at once, so every batch shape and thread pool is touched before timing
            warm = Dropper(module.input_dir)
            warm_items = [(f"warm-{i:04d}.jpg", frames[i % len(frames)]) for i in range(min(8, burst_frames))]
            warm.burst(warm_items)
            if not watcher.wait_for(warm.dropped, timeout):
                raise RuntimeError(f"warm-up results missing: {module.tail()}")

            # saturation: a burst of frames, all dropped at once
            burst = Dropper(module.input_dir)
            items = [(f"{size_key}-{i:05d}.jpg", frames[i % len(frames)]) for i in range(burst_frames)]
            cpu0, wall0 = module.cpu_seconds(), time.time()
            burst.burst(items)
            complete = watcher.wait_for(burst.dropped, timeout)
            cpu1 = module.cpu_seconds()
            last_seen = max((watcher.seen[n] for n in burst.dropped if n in watcher.seen), default=time.time())
            first_drop = min(burst.dropped.values())
            first_seen = min((watcher.seen[n] for n in burst.dropped if n in watcher.seen), default=last_seen)
            done = sum(1 for n in burst.dropped if n in watcher.seen)
            wall = max(1e-6, last_seen - first_drop)
            results = _read_results(results_dir, burst.dropped)
            out["saturated"] = {
                "frames": burst_frames,
                "completed": done,
                "complete": complete,
                "fps": round(done / wall, 2),
                "steadyFps": round((done - 1) / max(1e-6, last_seen - first_seen), 2) if done > 1 else None,
                "seconds": round(wall, 2),
                "latencyMs": latency_summary(drop_to_result_ms(burst.dropped, watcher.seen)),
                "stagesMs": stage_summary(results),
                "cpuMsPerFrame": round((cpu1 - cpu0) * 1000 / max(1, done), 1),
                "coresBusy": round((cpu1 - cpu0) / max(1e-6, time.time() - wall0), 2),
            }
            out["decodePool"] = _decode_pool(module.tail(400))
            if not light_frames:
                return out
            # light load: a fixed rate well under the throughput, so nothing queues
            fps = out["saturated"]["fps"] or 1.0
            interval = light_interval if light_interval is not None else min(1.0, max(0.1, 3.0 / fps))
            light = Dropper(module.input_dir)
            items = [(f"light-{size_key}-{i:05d}.jpg", frames[i % len(frames)]) for i in range(light_frames)]
            light.at_rate(items, interval)
            watcher.wait_for(light.dropped, timeout)
            results = _read_results(results_dir, light.dropped)
            out["light"] = {
                "frames": light_frames,
                "intervalSeconds": round(interval, 3),
                "latencyMs": latency_summary(drop_to_result_ms(light.dropped, watcher.seen)),
                "stagesMs": stage_summary(results),
            }
            # drop-to-result minus the result's `total` (intake to result): settle + watcher + write + poll
            overhead = [
                lat - r["timingsMs"]["total"]
                for lat, r in zip(drop_to_result_ms(light.dropped, watcher.seen), results, strict=False)
            ]
            out["light"]["settleWriteOverheadMs"] = round(float(np.median(overhead)), 1) if overhead else None
        out["peakRssMiB"] = round((module.peak_rss_kb() or 0) / 1024, 1)
        out["rssMiB"] = round((module.rss_kb() or 0) / 1024, 1)
    finally:
        code = module.stop()
        out["exitCode"] = code
    return out


# ------------------------------------------------------------------------------------------------ cases


def run_case(model: ModelCase, size_key: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from edge_inference.vision.decode import decode
    from edge_inference.vision.preprocess import prepare

    w, h = SIZES[size_key]
    case: dict[str, Any] = {"model": model.key, "size": size_key, "frameSize": [w, h], "loadStart": load_average()}
    print(f"== {model.key} {size_key}: generating frames", flush=True)
    unique = max(1, min(args.unique_frames, args.frames or args.unique_frames))
    frames = make_frames(w, h, unique)
    case["jpegKiB"] = round(float(np.mean([len(f) for f in frames])) / 1024, 1)
    frame_dir = workdir / f"frames-{size_key}"
    frame_dir.mkdir(exist_ok=True)
    files = []
    for i, data in enumerate(frames):
        files.append(frame_dir / f"f{i:03d}.jpg")
        files[-1].write_bytes(data)

    onnx_model = load_module_model(model.path, args.providers, workdir / "state-inproc")
    case["provider"] = onnx_model.provider
    case["inputSize"] = list(onnx_model.input_hw)
    tensors = [prepare(decode(f, 10**9), onnx_model.input_hw, onnx_model.input.dtype)[0] for f in frames]
    print(f"   ceiling ({onnx_model.provider})", flush=True)
    case["ceiling"] = measure_ceiling(onnx_model, tensors, args.seconds)
    print(f"   naive baselines, OpenCV and PIL ({case['ceiling']['fps']} fps ceiling)", flush=True)
    case["naive"] = run_naive(onnx_model, files, workdir / "naive-out", args.seconds, 0.5)
    case["naivePil"] = run_naive(onnx_model, files, workdir / "naive-pil-out", args.seconds, 0.5, decoder="pil")
    case["microMs"] = micro_costs(onnx_model, frames)
    accuracy_frames, truths = frames_with_truth(w, h, 12 if args.quick else 60, seed=11)
    print(f"   reduced JPEG decoding: accuracy on {len(accuracy_frames)} frames", flush=True)
    reduced = reduced_decode_accuracy(onnx_model, accuracy_frames, truths if model.key == "demo" else None)
    ceiling_fps = case["ceiling"]["fps"]
    del onnx_model, tensors  # the module gets the cores (and the memory) to itself

    burst = args.frames or int(min(args.max_frames, max(16, round(ceiling_fps * args.seconds * 2))))
    light = args.light_frames or (4 if args.quick else 15)
    print(f"   module: burst of {burst}, then {light} frames at a light rate", flush=True)
    case["module"] = run_module(
        model, frames, size_key, args.providers, workdir / f"module-{model.key}-{size_key}", burst, light, None, 600
    )
    if max(reduced["reductionFactors"]) > 1:  # the frames are large enough for a reduced decode to change them
        print("   module with JPEG_REDUCED_DECODE=true: the same burst", flush=True)
        fast = run_module(
            model,
            frames,
            size_key,
            args.providers,
            workdir / f"module-reduced-{model.key}-{size_key}",
            burst,
            0,
            None,
            600,
            {"JPEG_REDUCED_DECODE": "true"},
        )
        exact_fps = case["module"]["saturated"]["fps"]
        reduced["moduleFps"] = fast["saturated"]["fps"]
        reduced["moduleFpsExact"] = exact_fps
        reduced["fpsGain"] = round(fast["saturated"]["fps"] / exact_fps, 3) if exact_fps else None
        reduced["decodeMsPerFrame"] = fast["saturated"]["stagesMs"]["decode"]
    case["reducedDecode"] = reduced
    # the ceiling again, right after the module, at its best batch: the shared machine's load drifts, so the
    # ratio uses the mean of the two (both are kept)
    onnx_model = load_module_model(model.path, args.providers, workdir / "state-inproc")
    tensors = [prepare(decode(f, 10**9), onnx_model.input_hw, onnx_model.input.dtype)[0] for f in frames]
    after = measure_ceiling(onnx_model, tensors, args.seconds, batches=[case["ceiling"]["bestBatch"]])
    del onnx_model, tensors
    case["ceiling"]["fpsBefore"] = case["ceiling"]["fps"]
    case["ceiling"]["fpsAfter"] = after["fps"]
    case["ceiling"]["fps"] = ceiling_fps = round((case["ceiling"]["fpsBefore"] + after["fps"]) / 2, 2)
    sat = case["module"]["saturated"]
    case["ratios"] = {
        "moduleOverCeiling": round(sat["fps"] / ceiling_fps, 3) if ceiling_fps else None,
        "moduleOverNaive": round(sat["fps"] / case["naive"]["fps"], 2) if case["naive"]["fps"] else None,
        "moduleOverNaivePil": round(sat["fps"] / case["naivePil"]["fps"], 2) if case["naivePil"]["fps"] else None,
        "naiveOverCeiling": round(case["naive"]["fps"] / ceiling_fps, 3) if ceiling_fps else None,
    }
    p50 = case["module"]["light"]["latencyMs"]["p50"]
    bound = SETTLE_SECONDS * 1000 + 2 * case["ceiling"]["singleFrameMs"]
    case["lightLatencyGoal"] = {"p50Ms": p50, "boundMs": round(bound, 1), "met": p50 is not None and p50 <= bound}
    case["cpuBreakdown"] = cpu_breakdown(case)
    case["loadEnd"] = load_average()
    print(
        f"   ceiling {ceiling_fps} fps, naive {case['naive']['fps']} fps, module {sat['fps']} fps "
        f"({case['ratios']['moduleOverCeiling']} x ceiling, {case['ratios']['moduleOverNaive']} x naive); "
        f"light p50 {p50} ms (bound {bound:.0f} ms)",
        flush=True,
    )
    return case


def cpu_breakdown(case: dict[str, Any]) -> dict[str, Any]:
    """Where a frame's time goes at saturation: the module's wall ms per frame against its parts.

    `preCpuMs` is the single-threaded CPU of everything before the model (header check, JPEG decode,
    letterbox, to tensor, sha256), measured in-process on the same frames; `inferenceMs` is the model time
    per frame inside the module (batch time / batch size); `ceilingMs` is the model alone at its best batch."""
    micro = case["microMs"]
    sat = case["module"]["saturated"]
    wall = 1000 / sat["fps"] if sat["fps"] else None
    pre = sum(micro[k] for k in ("header", "imdecode", "letterbox", "toTensor", "sha256"))
    inference = sat["stagesMs"].get("inferencePerFrame")
    out = {
        "wallMsPerFrame": round(wall, 2) if wall else None,
        "ceilingMsPerFrame": round(1000 / case["ceiling"]["fps"], 2),
        "inferenceMs": inference,
        "preCpuMs": round(pre, 2),
        "postCpuMs": micro["postprocess"],
        "moduleCpuMsPerFrame": sat["cpuMsPerFrame"],
    }
    if wall:
        out["preShareOfWall"] = round(pre / wall, 3)
        out["inferenceShareOfWall"] = round(inference / wall, 3) if inference else None
    return out


machine_cache: dict[str, Any] = {}


# ----------------------------------------------------------------------------------------------- memory


def run_memory(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """20,000 small frames through the module; RSS sampled every second; at most ~500 waiting on the share."""
    total = args.memory_frames
    if DEMO_MODEL.is_file():
        model_path, model_note = DEMO_MODEL, "demo"
    else:
        from bench.yolov8n_model import build_yolov8n

        model_path = build_yolov8n(workdir / "yolov8n-320.onnx", 320).path
        model_note = "yolov8n-shaped at 320x320 (demo model absent)"
    frames = make_frames(640, 480, 32)
    module = ModuleProcess(model_path, workdir / "memory", args.providers, disposition="delete")
    record: dict[str, Any] = {"kind": "memory", "model": model_note, "frames": total, "loadStart": load_average()}
    t0 = time.monotonic()
    module.start()
    results_dir = module.output_dir / "results"
    dropper = Dropper(module.input_dir)
    samples: list[tuple[float, int, int]] = []  # (seconds, frames done, RSS KiB)
    dropped = 0
    done = 0
    next_sample = time.monotonic()
    try:
        while done < total:
            if module.proc is not None and module.proc.poll() is not None:
                raise RuntimeError(f"the module exited: {module.tail()}")
            with contextlib.suppress(FileNotFoundError):
                done = sum(1 for e in os.scandir(results_dir) if e.name.endswith(".json"))
            outstanding = dropped - done
            if outstanding < 250 and dropped < total:
                n = min(250, total - dropped)
                dropper.burst([(f"m{dropped + i:06d}.jpg", frames[(dropped + i) % len(frames)]) for i in range(n)])
                dropped += n
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - t0, 1), done, module.rss_kb() or 0))
                next_sample += 1.0
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        samples.append((round(elapsed, 1), done, module.rss_kb() or 0))
        peak = module.peak_rss_kb()
    finally:
        record["exitCode"] = module.stop()
    warm_at = total // 10
    warm = next((s for s in samples if s[1] >= warm_at), samples[0])
    end = samples[-1]
    record.update(
        {
            "seconds": round(elapsed, 1),
            "fps": round(total / elapsed, 1),
            "warmupFrames": warm_at,
            "rssAfterWarmupMiB": round(warm[2] / 1024, 1),
            "rssEndMiB": round(end[2] / 1024, 1),
            "peakRssMiB": round((peak or 0) / 1024, 1),
            "growthAfterWarmup": round((end[2] - warm[2]) / warm[2], 4) if warm[2] else None,
            "goalMet": bool(warm[2]) and (end[2] - warm[2]) / warm[2] < 0.10,
            "samples": samples[:: max(1, len(samples) // 200)],
            "loadEnd": load_average(),
        }
    )
    return record


# ----------------------------------------------------------------------------------------------- report


def goals(cases: list[dict[str, Any]]) -> dict[str, Any]:
    def find(model: str, size: str) -> dict[str, Any] | None:
        return next((c for c in cases if c["model"] == model and c["size"] == size), None)

    out: dict[str, Any] = {}
    heavy = find("yolov8n", "1080p")
    if heavy:
        r = heavy["ratios"]["moduleOverCeiling"]
        out["moduleOverCeiling_yolov8n_1080p"] = {
            "value": r,
            "goal": GOAL_CEILING_RATIO,
            "met": r >= GOAL_CEILING_RATIO,
        }
    demo = find("demo", "1080p")
    if demo:
        r = demo["ratios"]["moduleOverNaive"]
        out["moduleOverNaive_demo_1080p"] = {"value": r, "goal": GOAL_NAIVE_RATIO, "met": r >= GOAL_NAIVE_RATIO}
    out["lightP50"] = {f"{c['model']}_{c['size']}": c["lightLatencyGoal"] for c in cases}
    return out


def markdown_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Run `{report['id']}` ({report['mode']}): {m['cpu']}, {m['cores']} cores, {m['ramGiB']} GiB RAM, "
        f"onnxruntime {m['onnxruntime']}, provider {', '.join(sorted({c['provider'] for c in report['cases']}))}; "
        f"load average {report['loadStart'][0]} at the start, {report['loadEnd'][0]} at the end "
        f"(the machine was shared). Settle window {SETTLE_SECONDS * 1000:.0f} ms. "
        f"JSON: `bench/results/{report['id']}.json`.",
        "",
        "| model | frames | ceiling fps (best batch; before / after the module) | naive fps (OpenCV / PIL) | module fps "
        "| module / ceiling | module / naive (OpenCV / PIL) | decodes at once (of workers) "
        "| light p50 / p95 / p99 ms | burst p50 / p95 / p99 ms | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        mod = c["module"]
        lt, bt = mod["light"]["latencyMs"], mod["saturated"]["latencyMs"]
        lines.append(
            f"| {c['model']} | {c['size']} | {c['ceiling']['fps']} ({c['ceiling']['bestBatch']}; "
            f"{c['ceiling']['fpsBefore']} before, {c['ceiling']['fpsAfter']} after) | {c['naive']['fps']} / "
            f"{c['naivePil']['fps']} | {mod['saturated']['fps']} | {c['ratios']['moduleOverCeiling']} "
            f"| {c['ratios']['moduleOverNaive']} / {c['ratios']['moduleOverNaivePil']} "
            f"| {mod.get('decodePool', {}).get('atOnce', '-')} ({mod.get('decodePool', {}).get('workers', '-')}) "
            f"| {lt['p50']} / {lt['p95']} / {lt['p99']} (n={lt['n']}) | {bt['p50']} / {bt['p95']} / {bt['p99']} "
            f"(n={bt['n']}) | {mod['peakRssMiB']} |"
        )
    lines += [
        "",
        "Per-stage mean ms per frame at saturation (from the results' `timingsMs`; `inference` is the batch's time, "
        "`inf/frame` divides it by the batch), the module's CPU ms per frame (all threads), and single-threaded "
        "step costs on the same frames:",
        "",
        "| model | frames | queue | read | decode+prep | inference (batch) | inf/frame | postprocess | total "
        "| module CPU ms/frame (cores busy) | JPEG decode | letterbox | to tensor | header | sha256 | 1-frame model ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        s = c["module"]["saturated"]["stagesMs"]
        mic = c["microMs"]
        sat = c["module"]["saturated"]
        lines.append(
            f"| {c['model']} | {c['size']} | {s['queue']} | {s['read']} | {s['decode']} | {s['inference']} "
            f"({s.get('meanBatch')}) | {s.get('inferencePerFrame')} | {s['postprocess']} | {s['total']} "
            f"| {sat['cpuMsPerFrame']} ({sat['coresBusy']}) | {mic['imdecode']} | {mic['letterbox']} | {mic['toTensor']} "
            f"| {mic['header']} | {mic['sha256']} | {c['ceiling']['singleFrameMs']} |"
        )
    lines += [
        "",
        "JPEG_REDUCED_DECODE=true against the default exact decoding: module frames/s at saturation (the same "
        "burst), and on separate frames the mean / p95 shift of a box's corners (original pixels, boxes matched by "
        "class and IoU >= 0.5) and the share of the exact decode's detections still found; for the demo model also "
        "the recall against the frames' drawn defects:",
        "",
        "| model | frames | DCT scale | module fps exact -> reduced (gain) | decode+prep ms/frame reduced "
        "| box shift mean / p95 px | exact detections still found | recall exact -> reduced |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        r = c["reducedDecode"]
        if "moduleFps" not in r:
            continue
        recall = (
            f"{r['truthRecallExact']} -> {r['truthRecallReduced']} ({r['truthRecallChange']:+})"
            if "truthRecallExact" in r
            else "-"
        )
        lines.append(
            f"| {c['model']} | {c['size']} | 1/{max(r['reductionFactors'])} | {r['moduleFpsExact']} -> "
            f"{r['moduleFps']} ({r['fpsGain']} x) | {r['decodeMsPerFrame']} | {r['meanBoxShiftPx']} / "
            f"{r['p95BoxShiftPx']} | {r['recallVsExact']} of {r['exactDetections']} | {recall} |"
        )
    g = report["goals"]
    lines += ["", "Goals:", ""]
    if "moduleOverCeiling_yolov8n_1080p" in g:
        x = g["moduleOverCeiling_yolov8n_1080p"]
        lines.append(
            f"- module >= {x['goal']} x ceiling (yolov8n, 1080p): **{x['value']}**, {'met' if x['met'] else 'MISSED'}"
        )
    if "moduleOverNaive_demo_1080p" in g:
        x = g["moduleOverNaive_demo_1080p"]
        lines.append(
            f"- module >= {x['goal']} x naive (demo, 1080p; exact decoding; the naive loop decodes with OpenCV): "
            f"**{x['value']}**, {'met' if x['met'] else 'MISSED'}"
        )
    else:
        lines.append("- module >= 2 x naive (demo, 1080p): not measured (demo model absent in this run)")
    for key, x in g["lightP50"].items():
        lines.append(
            f"- light-load p50 <= settle + 2 x single-frame model latency ({key}): **{x['p50Ms']} ms** vs "
            f"{x['boundMs']} ms, {'met' if x['met'] else 'MISSED'}"
        )
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    if "smb" in report:
        from bench.smb_latency import markdown

        lines += markdown(report["smb"])
    if "tiling" in report:
        from bench.tiling_bench import markdown as tiling_markdown

        lines += tiling_markdown(report["tiling"])
    return "\n".join(lines)


def update_doc(table: str, begin: str = DOC_BEGIN, end: str = DOC_END, title: str = "Latest `make bench`") -> None:
    text = DOC.read_text() if DOC.is_file() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text = text.rstrip() + f"\n\n## {title}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{table}\n{end}{tail}")


def write_json(report: dict[str, Any], out: Path | None) -> Path:
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS_DIR
    path = out or folder / f"{report['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds per case (smoke test)")
    p.add_argument("--models", default=",".join(MODELS), help="comma list of: demo, yolov8n")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma list of: 1080p, 480p")
    p.add_argument("--frames", type=int, default=0, help="frames in the saturating burst (0: sized from the ceiling)")
    p.add_argument("--light-frames", type=int, default=0, help="frames at the light rate (0: 15, quick 4)")
    p.add_argument("--max-frames", type=int, default=240, help="cap on the automatic burst size")
    p.add_argument("--unique-frames", type=int, default=12, help="distinct frames generated per size (cycled)")
    p.add_argument(
        "--seconds", type=float, default=0.0, help="time per ceiling batch size / naive run (default 4, quick 1)"
    )
    p.add_argument(
        "--providers",
        default="auto",
        help="EXECUTION_PROVIDERS for all three (auto, cpu, cuda,cpu, tensorrt,cuda,cpu); a GPU one sets REQUIRE_GPU",
    )
    p.add_argument("--yolov8n-model", type=Path, help="a prebuilt yolov8n-shaped model (hosts without `onnx`)")
    p.add_argument("--wait-demo", type=float, default=0.0, help="seconds to wait for the demo model to appear")
    p.add_argument("--out", type=Path, help="JSON path (default $OUT/<id>.json, else bench/results/<id>.json)")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/PERFORMANCE.md (quick runs never do)")
    p.add_argument("--memory", action="store_true", help="flat-memory run: --memory-frames frames, RSS every second")
    p.add_argument("--memory-frames", type=int, default=20_000)
    p.add_argument("--keep", action="store_true", help="keep the temp work folder (module logs, results)")
    p.add_argument("--smb", action="store_true", help="run the SMB share case (always in a full run)")
    p.add_argument("--page", action="store_true", help="run the live-page case (always in a full run)")
    p.add_argument("--smb-frames", type=int, default=0, help="frames per SMB writer kind (0: 20, quick 4)")
    p.add_argument("--tiling", action="store_true", help="run the tiling case (always in a full run)")
    p.add_argument("--tiling-frames", type=int, default=0, help="4K frames in the tiling case (0: 10, quick 2)")
    p.add_argument(
        "--case",
        choices=("all", "share-scale"),
        default="all",
        help="share-scale: only the share-scale case (idle polling CPU, a million-frame backlog; long)",
    )
    p.add_argument("--rollout", action="store_true", help="run the model rollout case (always in a full run)")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.seconds = args.seconds or (1.0 if args.quick else 4.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from edge_inference.errors import EdgeInferenceError

    try:
        return run(parse_args(argv))
    except EdgeInferenceError as exc:  # e.g. --providers cuda,cpu where no GPU starts: one line, exit 2
        print(f"bench: cannot load the model: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.case == "share-scale":
        return run_share_scale_only(args)
    argv = args.argv
    machine_cache.update(machine_info())
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    started = time.monotonic()
    try:
        if args.memory:
            record = run_memory(args, workdir)
            record.update({"id": f"bench-memory-{stamp}-{machine_cache['host']}", "machine": machine_cache})
            path = write_json(record, args.out)
            print(json.dumps({k: v for k, v in record.items() if k != "samples"}, indent=1))
            print(f"wrote {path}")
            return 0
        report: dict[str, Any] = {
            "id": f"bench-{stamp}-{machine_cache['host']}",
            "mode": "quick" if args.quick else "full",
            "argv": argv,
            "machine": machine_cache,
            "providersSetting": args.providers,
            "settleSeconds": SETTLE_SECONDS,
            "loadStart": load_average(),
            "startedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        print(
            f"machine: {machine_cache['cpu']}, {machine_cache['cores']} cores, load {report['loadStart']}", flush=True
        )
        report["models"], report["notes"], report["cases"] = {}, [], []
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        for s in sizes:
            if s not in SIZES:
                raise SystemExit(f"unknown size {s!r}: expected {', '.join(SIZES)}")
        for key in [m.strip() for m in args.models.split(",") if m.strip() and m.strip() != "none"]:
            models, notes = prepare_models(
                [key], workdir, args.wait_demo, args.yolov8n_model
            )  # one at a time: the demo may be late
            report["notes"] += notes
            for m in models:
                report["models"][m.key] = {"path": m.path.name, "note": m.note, "params": m.params, "gflops": m.gflops}
                report["cases"] += [run_case(m, s, args, workdir) for s in sizes]
        if args.smb or not args.quick:
            from bench.smb_latency import run_smb_latency

            smb_frames = args.smb_frames or (4 if args.quick else 20)
            report["smb"] = run_smb_latency(workdir, smb_frames, args.providers)
        if not args.quick or args.page:
            from bench.page_case import run_page_case

            demo_models, notes = prepare_models(["demo"], workdir, args.wait_demo)
            report["notes"] += notes
            if demo_models:
                report["page"] = run_page_case(demo_models[0], args, workdir)
        if args.tiling or not args.quick:
            from bench.tiling_bench import run_tiling

            demo = load_module_model(DEMO_MODEL, args.providers, workdir)
            report["tiling"] = run_tiling(demo, args.tiling_frames or (2 if args.quick else 10))
        if args.rollout or not args.quick:
            from bench.rollout_bench import run_rollout_bench

            report["rollout"] = run_rollout_bench(workdir, args.providers, args.quick)
            print(json.dumps(report["rollout"], indent=1), flush=True)
        if not args.quick and not args.smb:
            from bench import share_scale

            report["shareScale"] = share_scale.run_share_scale(workdir, False, args.providers)
            if not args.no_docs:
                update_doc(
                    "\n".join(share_scale.markdown(report["shareScale"], report["id"])).strip(),
                    SCALE_BEGIN,
                    SCALE_END,
                    "Shares at scale (`make bench`'s share-scale case)",
                )
        report["goals"] = goals(report["cases"])
        if "page" in report:
            report["goals"]["pageOpenFpsRatio"] = {"value": report["page"]["ratio"], **report["page"]["goal"]}
        report["loadEnd"] = load_average()
        report["seconds"] = round(time.monotonic() - started, 1)
        path = write_json(report, args.out)
        table = markdown_table(report)
        print("\n" + table + "\n")
        if not args.quick and not args.no_docs:
            update_doc(table)
            print(f"updated {DOC.relative_to(ROOT)}")
            if report["cases"]:
                from bench.figures import IMAGES, draw_bench

                print(f"drew {draw_bench(report, IMAGES / 'bench.png').relative_to(ROOT)}")
        print(f"wrote {path} in {report['seconds']} s")
        return 0
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run_share_scale_only(args: argparse.Namespace) -> int:
    """`--case share-scale`: that case alone, its JSON under bench/results/, its section of PERFORMANCE.md."""
    from bench import share_scale

    machine_cache.update(machine_info())
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-scale-"))
    try:
        record = share_scale.run_share_scale(workdir, args.quick, args.providers)
        record.update({"id": f"bench-scale-{stamp}-{machine_cache['host']}", "machine": machine_cache})
        path = write_json(record, args.out)
        table = "\n".join(share_scale.markdown(record, record["id"])).strip()
        print("\n" + table + "\n")
        if not args.quick and not args.no_docs:
            update_doc(table, SCALE_BEGIN, SCALE_END, "Shares at scale (`make bench`'s share-scale case)")
            print(f"updated {DOC.relative_to(ROOT)}")
        print(f"wrote {path}")
        return 0
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
