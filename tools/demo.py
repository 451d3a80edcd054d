#!/usr/bin/env python3
"""`make demo`: the module and a dropper of synthetic defect frames, started together and stopped together.

Runs `python -m edge_inference` (its settings from the environment: make's folders under data/, LOCAL_TWIN_PATH)
and tools/drop_frames.py (`--count` 1920x1080 frames, one every `--interval` s, after `--delay` s) under
tools/child_processes.py: Ctrl-C, SIGTERM and SIGHUP stop both (the module drains what it took) and leave nothing
running. The module prints one line per frame; this launcher adds the progress:

    [demo] dropping 20 synthetic defect frames into data/input/line1/cam1, one every 1.0 s
    [demo] 20 frames dropped, Ctrl-C to stop
    [demo] 20 of 20 frames done: 31 detections in 15 frames, 0 failed (results in data/output/results/line1/cam1)

Exit code: the module's when it stops by itself (2: a bad setting or a port in use, which it names in one line),
else 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "modules" / "edge-inference", REPO):  # run as a script without PYTHONPATH
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from edge_inference.share.output_layout import result_path  # noqa: E402
from tools.child_processes import ChildProcesses, Stopped, stop_on_signals  # noqa: E402
from tools.drop_frames import frame_name  # noqa: E402

MODULE_GRACE_SECONDS = 30.0  # the module drains within SHUTDOWN_TIMEOUT_SECONDS (20) on SIGTERM
EXIT_CONFIG = 2  # the module's exit code for a bad setting or a port in use: it said why in one line
PARTIAL_AFTER_SECONDS = 30.0  # frames still without a result this long after the last drop: say how far it got


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--input", type=Path, required=True, help="the module's INPUT_DIR")
    p.add_argument("--output", type=Path, required=True, help="the module's OUTPUT_DIR")
    p.add_argument("--count", type=int, default=20, help="frames to drop (default 20)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames (default 1.0)")
    p.add_argument("--delay", type=float, default=3.0, help="seconds before the first frame (default 3)")
    p.add_argument("--subdir", default="line1/cam1", help="folder under --input (default line1/cam1)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error(f"--count must be at least 1, not {args.count}")
    if args.interval < 0 or args.delay < 0:
        p.error(f"--interval and --delay must not be negative (got {args.interval:g} and {args.delay:g})")
    if Path(args.subdir).is_absolute() or ".." in Path(args.subdir).parts:
        p.error(f"--subdir must be a relative path inside --input, not {args.subdir!r}")
    return args


@dataclass(frozen=True)
class Progress:
    done: int  # frames with a result file (failed ones included)
    failed: int
    detections: int
    with_detections: int  # frames with at least one detection

    def line(self, count: int) -> str:
        return (
            f"{self.done} of {count} frames done: {self.detections} detections in {self.with_detections} frames,"
            f" {self.failed} failed"
        )


def progress(output: Path, frames: Sequence[str]) -> Progress:
    """How far the module got with `frames` (input-relative paths), read from their result files."""
    done = failed = detections = with_detections = 0
    for rel in frames:
        try:
            result = json.loads((output / result_path(rel)).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # no result yet
            continue
        done += 1
        count = int(result.get("count") or 0)
        failed += "error" in result
        detections += count
        with_detections += count > 0
    return Progress(done, failed, detections, with_detections)


def _watch(
    args: argparse.Namespace, module: subprocess.Popen[bytes], dropper: subprocess.Popen[bytes], frames: list[str]
) -> int:
    """Until the module stops by itself (its exit code) or a signal raises `Stopped`: the progress lines."""
    dropped_at: float | None = None
    summed_up = False
    while True:
        code = module.poll()
        if code is not None:
            if code != EXIT_CONFIG:
                _say(f"the module stopped by itself with exit code {code}")
            return code
        if dropped_at is None and dropper.poll() is not None:
            dropped_at = time.monotonic()
            if dropper.returncode:
                _say(
                    f"drop_frames failed with exit code {dropper.returncode}; the module keeps running, Ctrl-C to stop"
                )
            else:
                _say(f"{len(frames)} frames dropped, Ctrl-C to stop")
        if dropped_at is not None and not summed_up:
            now = progress(args.output, frames)
            late = time.monotonic() - dropped_at > PARTIAL_AFTER_SECONDS
            if now.done == len(frames) or late:
                summed_up = True
                where = args.output / "results" / args.subdir
                _say(f"{now.line(len(frames))}{' so far' if late else ''} (results in {where})")
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    stop_on_signals()  # from here on SIGINT, SIGTERM and SIGHUP stop the children, then this launcher
    args = parse_args(argv)
    prefix = time.strftime("%Y%m%d-%H%M%S")
    frames = [f"{args.subdir}/{frame_name(prefix, i)}" for i in range(args.count)]
    dropper_cmd = [sys.executable, str(REPO / "tools" / "drop_frames.py"), "--to", str(args.input)]
    dropper_cmd += ["--count", str(args.count), "--interval", str(args.interval), "--delay", str(args.delay)]
    dropper_cmd += ["--subdir", args.subdir, "--prefix", prefix]
    try:
        with ChildProcesses() as children:
            module = children.start("the module", [sys.executable, "-m", "edge_inference"], grace=MODULE_GRACE_SECONDS)
            dropper = children.start("drop_frames", dropper_cmd, stdout=subprocess.DEVNULL)
            _say(
                f"dropping {args.count} synthetic defect frames into {args.input / args.subdir},"
                f" one every {args.interval:g} s"
            )
            try:
                return _watch(args, module, dropper, frames)
            except Stopped as stop:
                _say(f"{stop}: stopping the dropper and the module (it finishes the frames it took)")
                children.stop_all()
                return 0
    except Stopped:  # before the children were started
        return 0


if __name__ == "__main__":
    sys.exit(main())
