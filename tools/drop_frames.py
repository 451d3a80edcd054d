#!/usr/bin/env python3
"""Drop synthetic defect frames (JPEG) into a folder the module watches, as a camera or line PC would.

Used by `make demo`. Each frame is written atomically (a hidden `.name.jpg.tmp` first, then `os.replace` into
place), so the watcher never sees a half-written file. With `--truth-dir` the ground truth of each frame is
written to `<truth-dir>/<subdir>/<frame>.truth.json`, never into the watched folder.

    tools/drop_frames.py --to data/input --count 20 --interval 1.0 --delay 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tools.synthetic

from tools.synthetic import encode_jpeg, generate_frame


def write_atomically(path: Path, data: bytes) -> None:
    """Write data to path through a hidden temp file in the same folder, fsynced, then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def frame_name(run: str, index: int) -> str:
    """The name of the `index`-th frame of a run (`--prefix`, else the start time)."""
    return f"{run}-{index:04d}.jpg"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Drop synthetic defect frames into a watched folder.")
    parser.add_argument("--to", type=Path, required=True, help="the watched input folder")
    parser.add_argument("--count", type=int, default=20, help="how many frames (default 20)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between frames (default 1.0)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before the first frame")
    parser.add_argument("--subdir", default="line1/cam1", help="folder under --to (default line1/cam1)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--truth-dir", type=Path, default=None, help="write <frame>.truth.json here")
    parser.add_argument("--prefix", default=None, help="frame names <prefix>-0000.jpg... (default: the start time)")
    args = parser.parse_args(argv)
    if args.count < 0 or args.interval < 0 or args.delay < 0:
        parser.error("--count, --interval and --delay must not be negative")
    if args.prefix is not None and (not args.prefix or "/" in args.prefix or args.prefix.startswith(".")):
        parser.error("--prefix must be a plain, visible file name prefix")
    if Path(args.subdir).is_absolute() or ".." in Path(args.subdir).parts:
        parser.error("--subdir must be a relative path inside --to")
    if args.truth_dir is not None and _inside(args.truth_dir, args.to):
        parser.error("--truth-dir must not be inside the watched folder --to")
    return args


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    target = args.to / args.subdir
    target.mkdir(parents=True, exist_ok=True)
    truth_folder = args.truth_dir / args.subdir if args.truth_dir is not None else None
    if truth_folder is not None:
        truth_folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    run = args.prefix or time.strftime("%Y%m%d-%H%M%S")
    if args.delay:
        time.sleep(args.delay)
    for index in range(args.count):
        image, defects = generate_frame(rng, args.width, args.height)
        name = frame_name(run, index)
        if truth_folder is not None:
            truth = {
                "frame": f"{args.subdir}/{name}",
                "width": args.width,
                "height": args.height,
                "defects": [
                    {"label": d.label, "classId": d.class_id, "box": [round(v, 1) for v in d.box]} for d in defects
                ],
            }
            write_atomically(truth_folder / f"{name}.truth.json", json.dumps(truth, indent=1).encode())
        write_atomically(target / name, encode_jpeg(image, args.quality))
        labels = ", ".join(d.label for d in defects) or "no defects"
        print(f"dropped {target / name} ({args.width}x{args.height}; {labels})", flush=True)
        if index + 1 < args.count:
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
