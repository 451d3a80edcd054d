"""`make bench` case `tiling`: small defects on 4K frames, found without tiling and with it.

4K synthetic frames (tools/synthetic.py) carry defects drawn for a 320-pixel frame (`defect_scale=320`): a few
pixels wide, as small in the 4K frame as the demo model's training defects are in its 320x320 input. Each frame
goes through the module's own path for a camera profile (vision/views.py `cut`: the views letterboxed as the
decode workers make them; the model's session run in batches of the model's serving batch, as the batcher runs
them; `read`: decode, tile merge) twice in the same run: the whole-frame pass alone (tiling off) and tiled
(`always`, tileSize = the model input, overlap 0.2, with the full-frame pass). Recall is the share of drawn
defects matched by a detection of their class at IoU >= 0.3 (a 3-pixel defect's box moves a pixel or two);
frames per second are of the model's side (cut + inference + read, decode excluded: the same in both).
Goal: tiled recall >= 0.9 where the whole-frame pass is below 0.5.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_inference.ops.profiles import Profile, Tiling
from edge_inference.vision import views
from edge_inference.vision.postprocess import DecodeOptions
from tools.synthetic import generate_frame

WIDTH, HEIGHT = 3840, 2160
DEFECT_SCALE = 320
MIN_IOU = 0.3


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _found(detections: Any, truth: Any) -> int:
    used: set[int] = set()
    hits = 0
    for defect in truth:
        for i, d in enumerate(detections):
            if i not in used and d.label == defect.label and _iou(d.box, defect.box) >= MIN_IOU:
                used.add(i)
                hits += 1
                break
    return hits


def _judge(model: Any, image: np.ndarray, profile: Profile | None, options: DecodeOptions) -> tuple[Any, int]:
    cut = views.cut(image, model.transform, profile)
    outputs: list[tuple[np.ndarray, ...]] = []
    step = model.serving_batch
    for start in range(0, len(cut), step):
        chunk = cut[start : start + step]
        batch = np.concatenate([v.tensor for v in chunk]) if len(chunk) > 1 else chunk[0].tensor
        out = model.run(batch)
        outputs.extend(tuple(o[i] for o in out) for i in range(len(chunk)))
    decoded = views.read(model.decoder, outputs, cut, options, profile, (image.shape[1], image.shape[0]))
    return decoded.detections, sum(v.tile for v in cut)


def run_tiling(model: Any, frames: int, seed: int = 11) -> dict[str, Any]:
    """Recall and model-side fps of the whole-frame pass and of tiling, on `frames` 4K frames."""
    rng = np.random.default_rng(seed)
    images = [
        generate_frame(rng, WIDTH, HEIGHT, max_defects=8, min_defects=4, defect_scale=DEFECT_SCALE)
        for _ in range(frames)
    ]
    options = DecodeOptions(confidence=0.25, iou=0.45, max_detections=300)
    tiled = Profile("tiled", "**", tiling=Tiling(mode="always", overlap=0.2, full_frame=True))
    report: dict[str, Any] = {"frame": f"{WIDTH}x{HEIGHT}", "defectScale": DEFECT_SCALE, "frames": frames}
    truth_count = sum(len(t) for _, t in images)
    report["defects"] = truth_count
    for name, profile in (("wholeFrame", None), ("tiled", tiled)):
        _judge(model, images[0][0], profile, options)  # warm
        hits = 0
        tiles = 0
        started = time.perf_counter()
        for image, truth in images:
            detections, tiles = _judge(model, image, profile, options)
            hits += _found(detections, truth)
        seconds = time.perf_counter() - started
        report[name] = {"recall": round(hits / truth_count, 3), "fps": round(frames / seconds, 2), "tiles": tiles}
    report["fpsCost"] = round(report["wholeFrame"]["fps"] / report["tiled"]["fps"], 1)
    report["goalMet"] = report["tiled"]["recall"] >= 0.9 and report["wholeFrame"]["recall"] < 0.5
    return report


def markdown(report: dict[str, Any]) -> list[str]:
    """The case's lines in docs/PERFORMANCE.md's table section."""
    whole, tiled = report["wholeFrame"], report["tiled"]
    return [
        "",
        f"Tiling ({report['frames']} frames of {report['frame']}, {report['defects']} defects drawn for a "
        f"{report['defectScale']}-pixel frame, demo model):",
        "",
        "| pass | recall | model fps | tiles per frame |",
        "|---|---|---|---|",
        f"| whole frame | {whole['recall']} | {whole['fps']} | 0 |",
        f"| tiled (always, overlap 0.2, + full frame) | {tiled['recall']} | {tiled['fps']} | {tiled['tiles']} |",
        "",
        f"- goal tiled recall >= 0.9 where the whole-frame pass is below 0.5: "
        f"**{'met' if report['goalMet'] else 'MISSED'}**; tiling costs {report['fpsCost']}x the model time",
    ]
