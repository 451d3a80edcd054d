"""`make bench`'s share-scale case: what a big input share costs the module, and how it takes a huge backlog.

Run alone with `bench/run_bench.py --case share-scale` (it is long: about 7 minutes on 2 cores);
every full `make bench` runs it too. The trees are built on a tmpfs of their own (mounted here when run as
root, else /dev/shm) with hard links: every frame is a link to one real JPEG per folder (a link costs a
directory entry, no data), so a million frames take seconds to make and no disk.

1. Idle polling CPU: the module in keep mode (a read-only share), WATCH_MODE=poll, POLL_INTERVAL_SECONDS=1,
   RESCAN_INTERVAL_SECONDS=30, over N frames already processed and kept, in nested folders (100 per folder).
   "Already processed" is written straight into the module's own ledger (the rows it writes when it finishes
   a frame), so the case needs no hours of processing first. CPU is the module's user + system time over
   `--idle-seconds` after a warm-up, as a percentage of one core; the baseline, measured in the same run, is
   the same module over an empty share. Goals: < 2 % at 10,000 and < 3 % at 100,000 kept frames.
2. A new frame among the 100,000 kept ones (renamed into a nested folder): drop-to-result latency; goal at most
   the poll interval + the settle window + the frame's own processing time (its `timingsMs.total`).
3. A 1,000,000-frame backlog (1,000 folders of 1,000), INPUT_DISPOSITION=archive: time from starting the
   process to the first result (goal < 5 s), the drain rate over `--drain-seconds` against the drain rate of a
   2,000-frame backlog in the same run (goal: at least 0.9 of it), and the peak RSS (goal < 300 MB).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.run_bench import DEMO_MODEL, SETTLE_SECONDS, ModuleProcess, latency_summary, load_average, make_frames

POLL_SECONDS = 1.0
RESCAN_SECONDS = 30.0
PER_FOLDER_KEPT = 100
GOAL_IDLE = {10_000: 2.0, 100_000: 3.0}  # % of one core
GOAL_FIRST_RESULT_S = 5.0
GOAL_DRAIN_RATIO = 0.9
GOAL_PEAK_RSS_MB = 300.0
SMALL_BACKLOG = 2_000


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "2g") -> Iterator[Path]:
    """A tmpfs of its own at `where` (root), else a folder on /dev/shm, else `where` on the work disk."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]).returncode == 0
    if mounted:
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", str(where)], check=False)
        return
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="share-scale-", dir=shm)) if shm.is_dir() else where
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def folder_of(index: int, per_folder: int) -> str:
    """Nested folders: cam<c>/h<h>/ (10 cameras, then hours), `per_folder` frames in each."""
    folder = index // per_folder
    return f"cam{folder % 10:02d}/h{folder // 10:04d}"


def build_tree(root: Path, count: int, per_folder: int, jpeg: bytes) -> list[tuple[str, int, int]]:
    """`count` frames as hard links (one real JPEG per folder); returns (rel path, size, mtime_ns) of each."""
    made: list[tuple[str, int, int]] = []
    source: Path | None = None
    for i in range(count):
        folder = folder_of(i, per_folder)
        if i % per_folder == 0:
            (root / folder).mkdir(parents=True, exist_ok=True)
            source = root / folder / "f00000.jpg"
            source.write_bytes(jpeg)
            st = source.stat()
        else:
            assert source is not None
            os.link(source, root / folder / f"f{i % per_folder:05d}.jpg")
        made.append((f"{folder}/f{i % per_folder:05d}.jpg", st.st_size, st.st_mtime_ns))
    return made


def mark_done(state_dir: Path, frames: list[tuple[str, int, int]]) -> None:
    """Write the ledger rows the module writes when it finishes these frames (keep mode: the ledger remembers)."""
    from edge_inference.entities import FrameJob
    from edge_inference.share.ledger import Ledger

    ledger = Ledger(state_dir / "ledger.sqlite")
    try:
        for start in range(0, len(frames), 50_000):
            rows = []
            for rel, size, mtime in frames[start : start + 50_000]:
                frame_id = FrameJob(rel, Path(), size, mtime, "scan", 0.0).frame_id
                rows.append((frame_id, rel, size, mtime, "done"))
            ledger.record_many(rows)
    finally:
        ledger.close()


def telemetry_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _module(workdir: Path, share: Path, disposition: str, **env: str) -> ModuleProcess:
    module = ModuleProcess(
        DEMO_MODEL,
        workdir,
        os.environ.get("BENCH_PROVIDERS", "auto"),
        disposition=disposition,
        extra_env={
            "INPUT_DIR": str(share / "input"),
            "OUTPUT_DIR": str(share / "output"),
            "WATCH_MODE": "poll",
            "POLL_INTERVAL_SECONDS": str(POLL_SECONDS),
            "RESCAN_INTERVAL_SECONDS": str(RESCAN_SECONDS),
            **env,
        },
    )
    module.output_dir = share / "output"
    return module


def idle_cpu(
    workdir: Path, share: Path, kept: int, jpeg: bytes, warmup: float, seconds: float, new_frames: int
) -> dict[str, Any]:
    """CPU of the idle module over `kept` processed frames; then `new_frames` dropped among them."""
    (share / "input").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    frames = build_tree(share / "input", kept, PER_FOLDER_KEPT, jpeg)
    module = _module(workdir, share, "keep")
    mark_done(module.state_dir, frames)
    built_s = time.monotonic() - t0
    out: dict[str, Any] = {"kept": kept, "folders": -(-kept // PER_FOLDER_KEPT), "buildSeconds": round(built_s, 1)}
    module.start()
    try:
        time.sleep(warmup)
        cpu0, wall0 = module.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = module.cpu_seconds(), time.monotonic()
        out["cpuPercent"] = round((cpu1 - cpu0) * 100 / (wall1 - wall0), 2)
        out["seconds"] = round(wall1 - wall0, 1)
        out["rssMiB"] = round((module.rss_kb() or 0) / 1024, 1)
        if new_frames:
            out["newFrame"] = new_frame_latency(share, module, new_frames, jpeg)
    finally:
        out["exitCode"] = module.stop()
    return out


def new_frame_latency(share: Path, module: ModuleProcess, count: int, jpeg: bytes) -> dict[str, Any]:
    """Frames renamed into nested folders among the kept ones, one every 3 s: drop-to-result ms each."""
    latencies, totals = [], []
    for i in range(count):
        folder = folder_of((i * 7919) % 100_000, PER_FOLDER_KEPT)
        target = share / "input" / folder / f"new{i:03d}.jpg"
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True)
        tmp = target.with_name(f".new{i:03d}.jpg.tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, target)
        dropped = time.time()
        result = share / "output" / "results" / folder / f"new{i:03d}.jpg.json"
        deadline = time.monotonic() + 30
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        if result.exists():
            latencies.append((time.time() - dropped) * 1000)
            with contextlib.suppress(OSError, ValueError):
                totals.append(float(json.loads(result.read_text())["timingsMs"]["total"]))
        time.sleep(3.0)
    frame_ms = max(totals) if totals else 0.0
    bound = (POLL_SECONDS + SETTLE_SECONDS) * 1000 + frame_ms
    summary = latency_summary(latencies)
    worst = summary["max"]
    return {
        "frames": count,
        "latencyMs": summary,
        "frameTotalMs": round(frame_ms, 1),
        "boundMs": round(bound, 1),
        "met": worst is not None and len(latencies) == count and worst <= bound,
    }


def backlog(workdir: Path, share: Path, count: int, jpeg: bytes, seconds: float) -> dict[str, Any]:
    """Start the module on `count` waiting frames (archive mode): first result, drain rate, peak RSS."""
    (share / "input").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    build_tree(share / "input", count, 1000, jpeg)
    out: dict[str, Any] = {"frames": count, "buildSeconds": round(time.monotonic() - t0, 1)}
    module = _module(workdir, share, "archive")
    telemetry = share / "output" / "telemetry.jsonl"
    started = time.monotonic()
    module.start()
    try:
        first = None
        while first is None and time.monotonic() - started < 120:
            if telemetry_lines(telemetry):
                first = time.monotonic() - started
            else:
                time.sleep(0.02)
        out["firstResultSeconds"] = None if first is None else round(first, 2)
        time.sleep(2.0)  # past the first batches
        n0, w0 = telemetry_lines(telemetry), time.monotonic()
        peak_rss = 0
        while time.monotonic() - w0 < seconds:
            time.sleep(1.0)
            peak_rss = max(peak_rss, module.rss_kb() or 0)
            if telemetry_lines(telemetry) >= count:
                break
        n1, w1 = telemetry_lines(telemetry), time.monotonic()
        out["drainFps"] = round((n1 - n0) / (w1 - w0), 1)
        out["drained"] = n1
        out["rssMiB"] = round(peak_rss / 1024, 1)
        out["peakRssMiB"] = round((module.peak_rss_kb() or 0) / 1024, 1)
    finally:
        out["exitCode"] = module.stop()
    return out


def run_share_scale(workdir: Path, quick: bool, providers: str) -> dict[str, Any]:
    os.environ["BENCH_PROVIDERS"] = providers
    jpeg = make_frames(640, 480, 1)[0]
    warmup, idle_s = (8.0, 10.0) if quick else (15.0, 65.0)
    sizes = (0, 2_000, 10_000) if quick else (0, 10_000, 100_000)
    big, drain_s = (50_000, 10.0) if quick else (1_000_000, 60.0)
    out: dict[str, Any] = {"loadStart": load_average(), "pollSeconds": POLL_SECONDS, "rescanSeconds": RESCAN_SECONDS}
    out["idle"] = []
    for kept in sizes:
        print(f"== share-scale: idle over {kept} kept frames", flush=True)
        with tmpfs(workdir / f"scale-idle-{kept}") as share:
            new = 5 if kept == sizes[-1] else 0
            out["idle"].append(idle_cpu(workdir / f"idle-{kept}", share, kept, jpeg, warmup, idle_s, new))
    out["drain"] = {}
    for label, count in (("small", SMALL_BACKLOG), ("big", big)):
        print(f"== share-scale: a backlog of {count} frames", flush=True)
        with tmpfs(workdir / f"scale-backlog-{count}", "4g") as share:
            out["drain"][label] = backlog(workdir / f"backlog-{count}", share, count, jpeg, drain_s)
    out["goals"] = goals(out)
    out["loadEnd"] = load_average()
    return out


def goals(out: dict[str, Any]) -> dict[str, Any]:
    g: dict[str, Any] = {}
    for case in out["idle"]:
        goal = GOAL_IDLE.get(case["kept"])
        if goal is not None:
            g[f"idle_{case['kept']}"] = {"value": case["cpuPercent"], "goal": goal, "met": case["cpuPercent"] < goal}
        if "newFrame" in case:
            g["newFrame"] = {"value": case["newFrame"]["latencyMs"]["max"], "goal": case["newFrame"]["boundMs"]}
            g["newFrame"]["met"] = case["newFrame"]["met"]
    big, small = out["drain"]["big"], out["drain"]["small"]
    first = big["firstResultSeconds"]
    g["firstResult"] = {"value": first, "goal": GOAL_FIRST_RESULT_S, "met": first is not None and first < 5.0}
    ratio = round(big["drainFps"] / small["drainFps"], 3) if small["drainFps"] else None
    g["drainRatio"] = {"value": ratio, "goal": GOAL_DRAIN_RATIO, "met": ratio is not None and ratio >= 0.9}
    g["peakRss"] = {"value": big["peakRssMiB"], "goal": GOAL_PEAK_RSS_MB, "met": big["peakRssMiB"] < 300}
    return g


def markdown(scale: dict[str, Any], run_id: str) -> list[str]:
    g = scale["goals"]

    def verdict(key: str) -> str:
        return "met" if g[key]["met"] else "MISSED"

    lines = [
        "",
        f"Run `{run_id}` (JSON: `bench/results/{run_id}.json`; load average {scale['loadStart'][0]} at the start,"
        f" {scale['loadEnd'][0]} at the end). Trees on a tmpfs, every frame a hard link; keep mode for the idle rows,"
        f" WATCH_MODE=poll, poll {scale['pollSeconds']} s, sweep every {scale['rescanSeconds']} s:",
        "",
        "| kept frames | folders | idle CPU % of one core | RSS MiB |",
        "|---|---|---|---|",
    ]
    for case in scale["idle"]:
        lines.append(f"| {case['kept']:,} | {case['folders']:,} | {case['cpuPercent']} | {case['rssMiB']} |")
    big, small = scale["drain"]["big"], scale["drain"]["small"]
    lines += [
        "",
        "| backlog (archive mode) | first result s | drain frames/s | peak RSS MiB |",
        "|---|---|---|---|",
        f"| {small['frames']:,} | {small['firstResultSeconds']} | {small['drainFps']} | {small['peakRssMiB']} |",
        f"| {big['frames']:,} | {big['firstResultSeconds']} | {big['drainFps']} | {big['peakRssMiB']} |",
        "",
    ]
    for key, label in (("idle_10000", "idle CPU at 10,000 kept"), ("idle_100000", "idle CPU at 100,000 kept")):
        if key in g:
            lines.append(f"- {label} < {g[key]['goal']} %: **{g[key]['value']} %**, {verdict(key)}")
    if "newFrame" in g:
        lines.append(
            f"- a new frame among the kept ones, worst drop-to-result <= poll + settle + frame time: "
            f"**{g['newFrame']['value']} ms** vs {g['newFrame']['goal']} ms, {verdict('newFrame')}"
        )
    lines.append(
        f"- first result of the big backlog < 5 s: **{g['firstResult']['value']} s**, {verdict('firstResult')}"
    )
    lines.append(
        f"- drain rate of the big backlog >= 0.9 x the small one: **{g['drainRatio']['value']}**, "
        f"{verdict('drainRatio')}"
    )
    lines.append(f"- peak RSS while draining < 300 MB: **{g['peakRss']['value']} MiB**, {verdict('peakRss')}")
    return lines
