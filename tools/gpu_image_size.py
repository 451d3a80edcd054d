#!/usr/bin/env python3
"""What the amd64.gpu image's Python packages weigh once installed, and what cuda_prune.py takes off.

No Docker engine is needed: a wheel's installed size is the sum of its members' sizes, and the prune list is
applied to the member names. Download the wheels first (the versions the image pins):

    pip download --no-deps -d /tmp/wheels -r modules/edge-inference/requirements-gpu.txt onnxruntime-gpu==1.26.0
    tools/gpu_image_size.py /tmp/wheels [--out bench/results/gpu-image-size.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "modules" / "edge-inference"))

from cuda_prune import PRUNE, prunable

MIB = 2**20


def measure(wheel: Path) -> dict[str, object]:
    members = [m for m in zipfile.ZipFile(wheel).infolist() if not m.is_dir()]
    installed = sum(m.file_size for m in members)
    pruned = sum(m.file_size for m in members if prunable(m.filename))
    return {"wheel": wheel.name, "installedMiB": round(installed / MIB, 1), "prunedMiB": round(pruned / MIB, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", type=Path, help="folder of downloaded .whl files")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    rows = [measure(w) for w in sorted(args.wheels.glob("*.whl"))]
    if not rows:
        print(f"no wheels in {args.wheels}", file=sys.stderr)
        return 1
    total = round(sum(float(r["installedMiB"]) for r in rows), 1)  # type: ignore[arg-type]
    pruned = round(sum(float(r["prunedMiB"]) for r in rows), 1)  # type: ignore[arg-type]
    for r in rows:
        print(f"{r['installedMiB']:>8} MiB  {r['prunedMiB']:>6} MiB pruned  {r['wheel']}")
    print(f"{total:>8} MiB installed; {pruned} MiB pruned; {round(total - pruned, 1)} MiB left")
    report = {
        "wheels": rows,
        "installedMiB": total,
        "prunedMiB": pruned,
        "leftMiB": round(total - pruned, 1),
        "prune": list(PRUNE),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
