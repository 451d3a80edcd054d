"""`make bench`'s model rollout case: what a candidate and a swap cost the active model, measured in one run.

The module runs in-process (`app.Module`, the bundled demo model, the module's default threads and batch size) on
640x480 JPEGs, with a loopback HTTPS model server (tools/model_server.py) and the twin driven through its own
`TwinState` (tests/rollout_support.py):

- burst: 240 frames (quick: 60) dropped while intake is paused, then released: frames/s of the active model alone,
  and with a candidate (the demo model again, sampleRate 1) evaluated beside it. Goal: with / alone >= 0.9 (the
  candidate runs on spare capacity only), and the candidate compares only a few of the burst's frames.
- light: 40 frames (quick: 12) at 4 per second with the candidate: the share of sampled frames it compares (spare
  capacity is used when there is some).
- swap: 10 frames a second for 12 s (quick: 6 s); the demo model re-versioned is rolled out after a third of it.
  The longest gap between two results while the new model is fetched, verified, warmed and swapped in, against the
  longest gap before it, and every frame's single result. Goal: longest gap during the rollout <= 2 x before (the
  pipeline never stops taking frames while the new model loads) and nothing lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import time
from pathlib import Path
from typing import Any

from bench.run_bench import DEMO_MODEL, latency_summary, load_average, make_frames
from tests.rollout_support import Running, eventually, modules, start_module
from tools.model_server import ModelServer

GOAL_CANDIDATE_RATIO = 0.9
GOAL_SWAP_GAP_RATIO = 2.0


def _when(result: Any) -> float:
    return dt.datetime.fromisoformat(result.processed_at.replace("Z", "+00:00")).timestamp()


def _module(workdir: Path, name: str, server: ModelServer, providers: str, running: list[Running]) -> Running:
    env = {"EXECUTION_PROVIDERS": providers, "INFERENCE_THREADS": "0", "BATCH_SIZE": "0", "QUEUE_SIZE": "1000"}
    return start_module(workdir / name, DEMO_MODEL, server.ca_file, running=running, **env)


def _drop(run: Running, frames: list[bytes], n: int, name: str) -> None:
    tmp = run.dirs["input"].parent / f".{name}.tmp"
    tmp.write_bytes(frames[n % len(frames)])
    os.replace(tmp, run.dirs["input"] / name)


def _candidate(run: Running, server: ModelServer) -> None:
    sha = hashlib.sha256(DEMO_MODEL.read_bytes()).hexdigest()
    run.patch(
        {
            "candidate": {
                "name": "copy",
                "version": "1",
                "url": server.url("demo.onnx"),
                "sha256": sha,
                "sampleRate": 1.0,
            }
        }
    )
    assert run.ack("candidate", timeout=120)["ac"] == 200


def _burst(run: Running, frames: list[bytes], count: int) -> float:
    run.module.commands.pause()
    for n in range(count):
        _drop(run, frames, n, f"burst-{n:04d}.jpg")
    started = time.monotonic()
    run.module.commands.resume()
    assert eventually(lambda: len(run.collector.snapshot()) >= count, 600, 0.005)
    return count / (time.monotonic() - started)


def _stream(
    run: Running, frames: list[bytes], seconds: float, rate: float, at: float, action: Any
) -> tuple[float, float]:
    """Frames at `rate` for `seconds`; `action()` after `at` seconds; returns (action started, ended) epoch times."""
    started, acted = time.monotonic(), (0.0, 0.0)
    n = 0
    while time.monotonic() - started < seconds:
        _drop(run, frames, n, f"stream-{n:04d}.jpg")
        n += 1
        if not acted[0] and time.monotonic() - started >= at:
            begin = time.time()
            action()
            acted = (begin, time.time())
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
    assert eventually(lambda: len(run.collector.snapshot()) >= n, 120)
    return acted


def run_rollout_bench(workdir: Path, providers: str, quick: bool) -> dict[str, Any]:
    frames = make_frames(640, 480, 8)
    burst, light, stream_s = (60, 12, 6.0) if quick else (240, 40, 12.0)
    report: dict[str, Any] = {"frames": "640x480 JPEG", "model": DEMO_MODEL.name, "loadStart": load_average()}
    new = workdir / "demo-bench.onnx"
    import onnx

    proto = onnx.load(str(DEMO_MODEL))
    for entry in proto.metadata_props:
        if entry.key == "version":
            entry.value = "bench"
    onnx.save(proto, str(new))
    with ModelServer(workdir / "server") as server, modules() as running:
        server.put("demo.onnx", DEMO_MODEL.read_bytes())
        server.put("new.onnx", new.read_bytes())
        alone = _module(workdir, "alone", server, providers, running)
        report["burstAloneFps"] = round(_burst(alone, frames, burst), 1)
        alone.stop()
        shadowed = _module(workdir, "candidate", server, providers, running)
        _candidate(shadowed, server)
        report["burstWithCandidateFps"] = round(_burst(shadowed, frames, burst), 1)
        time.sleep(1.0)
        stats = shadowed.module.shadow.stats() or {}
        report["burstCandidate"] = {k: stats.get(k) for k in ("framesSampled", "framesCompared", "framesSkipped")}
        before = stats.get("framesCompared", 0)
        for n in range(light):
            _drop(shadowed, frames, n, f"light-{n:04d}.jpg")
            time.sleep(0.25)
        time.sleep(1.0)
        stats = shadowed.module.shadow.stats() or {}
        report["lightCandidateCompared"] = f"{stats.get('framesCompared', 0) - before} of {light}"
        shadowed.stop()
        swapping = _module(workdir, "swap", server, providers, running)
        sha = hashlib.sha256(new.read_bytes()).hexdigest()
        value = {"name": "demo", "version": "bench", "url": server.url("new.onnx"), "sha256": sha}

        def roll_out() -> None:
            swapping.patch({"model": value})
            assert swapping.ack("model", timeout=120)["ac"] == 200

        began, ended = _stream(swapping, frames, stream_s, 10.0, stream_s / 3, roll_out)
        results = sorted(swapping.collector.snapshot(), key=_when)
        times = [_when(r) for r in results]
        gaps = [(b, (b - a) * 1000) for a, b in itertools.pairwise(times)]
        before_gap = max((g for t, g in gaps if t < began), default=0.0)
        during_gap = max((g for t, g in gaps if began <= t <= ended + 0.5), default=0.0)
        paths = [r.rel_path for r in results]
        report["swap"] = {
            "frames": len(paths),
            "eachOnce": len(paths) == len(set(paths)),
            "rolloutSeconds": round(ended - began, 2),
            "longestGapBeforeMs": round(before_gap, 1),
            "longestGapDuringMs": round(during_gap, 1),
            "totalMsDuring": latency_summary(
                [r.timings_ms["total"] for r, t in zip(results, times, strict=True) if began <= t <= ended + 0.5]
            ),
            "byModel": {v: sum(1 for r in results if r.model.version == v) for v in {r.model.version for r in results}},
        }
    report["candidateRatio"] = round(report["burstWithCandidateFps"] / report["burstAloneFps"], 3)
    report["swapGapRatio"] = round(
        report["swap"]["longestGapDuringMs"] / max(1.0, report["swap"]["longestGapBeforeMs"]), 2
    )
    report["goals"] = {
        "candidateRatio": {"goal": GOAL_CANDIDATE_RATIO, "met": report["candidateRatio"] >= GOAL_CANDIDATE_RATIO},
        "swapGapRatio": {"goal": GOAL_SWAP_GAP_RATIO, "met": report["swapGapRatio"] <= GOAL_SWAP_GAP_RATIO},
        "nothingLost": report["swap"]["eachOnce"],
    }
    report["loadEnd"] = load_average()
    return report
