#!/usr/bin/env python3
"""The pictures of the measurements, drawn with matplotlib (a dev dependency) from the committed results:

- docs/images/bench.png: per bench case, frames/s of the ceiling (ONNX Runtime alone), the naive loop and the
  module; and the module's drop-to-result latency distribution (percentiles: saturated burst and light load);
  `make bench` draws it at the end of a full run (bench/run_bench.py), from the JSON it wrote;
- docs/images/soak.png: the soak on a time axis: RSS, outbox depth (results written, not yet delivered), the
  frames/s, and every fault injected (bench/soak.py draws it at the end of a run, from its CSV and JSON).

    python bench/figures.py                 # both, from the newest bench-*.json with cases and soak-*.csv
    python bench/figures.py --bench FILE.json --soak FILE.csv --out docs/images
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
IMAGES = ROOT / "docs" / "images"
PERCENTILES = ("p50", "p95", "p99", "max")
COLOURS = {"ceiling": "#9aa5b1", "naive": "#e07b39", "module": "#2f6fb3", "page": "#58a55c"}


def newest(pattern: str) -> Path | None:
    """The newest file of `pattern` in bench/results/ by the time in its name (bench-<yyyymmdd-hhmmss>-...)."""
    found = sorted(RESULTS.glob(pattern), key=lambda p: p.name)
    return found[-1] if found else None


def newest_bench() -> Path | None:
    """The newest bench JSON with model cases to draw (a run of one other case alone has none)."""
    found = sorted(RESULTS.glob("bench-2*.json"), key=lambda p: p.name, reverse=True)
    return next((p for p in found if json.loads(p.read_text()).get("cases")), None)


def draw_bench(report: dict[str, Any], out: Path) -> Path:
    cases = report.get("cases") or []
    if not cases:
        raise ValueError("the bench report has no cases to draw")
    names = [f"{c['model']}\n{c['size']}" for c in cases]
    fig, (fps_ax, lat_ax) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.26
    series = [
        ("ceiling", [c["ceiling"]["fps"] for c in cases], "ceiling (ONNX Runtime alone)"),
        ("naive", [c["naive"]["fps"] for c in cases], "naive loop (one frame at a time)"),
        ("module", [c["module"]["saturated"]["fps"] for c in cases], "module (share to result file)"),
    ]
    for i, (key, values, label) in enumerate(series):
        xs = [x + (i - 1) * width for x in range(len(cases))]
        bars = fps_ax.bar(xs, values, width, label=label, color=COLOURS[key])
        fps_ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    fps_ax.set_xticks(range(len(cases)), names)
    fps_ax.set_ylabel("frames/s")
    fps_ax.set_title(f"Throughput per case ({cases[0].get('provider', '?')})")
    fps_ax.legend(fontsize=8, loc="upper right")
    for case, name in zip(cases, names, strict=True):
        for load, style in (("saturated", "-"), ("light", "--")):
            summary = (case["module"].get(load) or {}).get("latencyMs") or {}
            values = [summary.get(p) for p in PERCENTILES]
            if all(v is not None for v in values):
                lat_ax.plot(PERCENTILES, values, style, marker="o", label=f"{name.replace(chr(10), ' ')} {load}")
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel("drop-to-result latency, ms (log)")
    lat_ax.set_title("Module latency distribution")
    lat_ax.legend(fontsize=7)
    lat_ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"make bench: {report.get('id', '')}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_soak(samples: list[dict[str, Any]], faults: list[dict[str, Any]], out: Path) -> Path:
    if not samples:
        raise ValueError("the soak has no samples to draw")
    minutes = [float(s["t"]) / 60 for s in samples]

    def column(name: str) -> list[float]:
        return [float(s[name]) if s.get(name) not in (None, "") else float("nan") for s in samples]

    outbox = [d - v for d, v in zip(column("done"), column("delivered"), strict=True)]
    fig, axes = plt.subplots(3, 1, figsize=(12, 6.5), sharex=True)
    panels = [
        (axes[0], column("rssMB"), "RSS, MB", COLOURS["module"]),
        (axes[1], outbox, "outbox depth\n(written, not delivered)", COLOURS["naive"]),
        (axes[2], column("fps"), "frames/s", COLOURS["page"]),
    ]
    for ax, values, label, colour in panels:
        ax.plot(minutes, values, color=colour, linewidth=1.2)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        for fault in faults:
            event = str(fault.get("event", ""))
            if "back" in event:
                continue
            ax.axvline(float(fault["t"]) / 60, color="#c62828", alpha=0.35, linewidth=1)
    for fault in faults:
        event = str(fault.get("event", ""))
        if "back" not in event:
            axes[0].annotate(
                event,
                (float(fault["t"]) / 60, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                va="top",
                ha="right",
                color="#c62828",
            )
    axes[0].set_ylim(bottom=0)
    axes[2].set_xlabel("minutes")
    fig.suptitle("Soak: RSS, outbox depth and throughput with faults injected (red lines)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_soak(csv_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The samples of a soak CSV and the faults of its JSON beside it (none when it is missing)."""
    with open(csv_path, newline="") as fh:
        samples = list(csv.DictReader(fh))
    summary_path = csv_path.with_suffix(".json")
    faults = json.loads(summary_path.read_text())["summary"]["faults"] if summary_path.exists() else []
    return samples, faults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=newest_bench())
    parser.add_argument("--soak", type=Path, default=newest("soak-*.csv"))
    parser.add_argument("--out", type=Path, default=IMAGES)
    args = parser.parse_args(argv)
    if args.bench is not None:
        print(f"wrote {draw_bench(json.loads(args.bench.read_text()), args.out / 'bench.png')} from {args.bench.name}")
    if args.soak is not None:
        samples, faults = read_soak(args.soak)
        print(f"wrote {draw_soak(samples, faults, args.out / 'soak.png')} from {args.soak.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
