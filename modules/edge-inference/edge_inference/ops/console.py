"""Local mode's console: one readable line per finished share frame (the full message stays in telemetry.jsonl).

    line1/cam1/0001.jpg: 4 detections (scratch 0.93 x2, dent 0.71, spot 0.55) in 62 ms
    line1/cam1/0002.jpg: 0 detections in 48 ms
    line1/cam1/0003.jpg: failed corrupt_image: corrupt JPEG image: the decoder could not read it    (at WARNING)
    line1/cam1/0004.jpg: classified ok 0.97, dent 0.02, scratch 0.01 in 9 ms    (a classify model)

`frame_line(result)` builds the line from the result's public fields only; `FrameConsole` wraps the pipeline's
result listener (the telemetry publisher) and logs that line after it, so the console says what happened to
every frame whatever the telemetry mode. IoT Edge has no such console: there the messages go to edgeHub.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from edge_inference.entities import FrameResult
from edge_inference.names import shown
from edge_inference.pipeline.finish import ResultListener

log = logging.getLogger(__name__)

TOP_LABELS = 3  # labels named on the line, by their best confidence; the others are counted


def frame_line(result: FrameResult) -> str:
    """`<path>: <n> detections (<label> <best confidence> x<count>, ...) in <ms> ms`, a classifier's
    `<path>: classified <label> <confidence>, ... in <ms> ms` (its best three), or `<path>: failed <code>: <reason>`."""
    path = shown(result.rel_path)
    if result.error is not None:
        return f"{path}: failed {result.error.get('code', '?')}: {result.error.get('message', '')}"
    if result.classification is not None:  # a classifier: its best classes, not detections
        best = ", ".join(f"{c.label} {c.confidence:.2f}" for c in result.classification.top5[:TOP_LABELS])
        line = f"{path}: classified {best or result.classification.top1.label}"
    else:
        line = _detections(result)
    total = result.timings_ms.get("total")
    return line if total is None else f"{line} in {total:.0f} ms"


def _detections(result: FrameResult) -> str:
    count = len(result.detections)
    line = f"{shown(result.rel_path)}: {count} detection{'' if count == 1 else 's'}"
    labels: dict[str, tuple[float, int]] = {}  # label -> (best confidence, detections)
    for d in result.detections:
        best, seen = labels.get(d.label, (0.0, 0))
        labels[d.label] = (max(best, d.confidence), seen + 1)
    if labels:
        ranked = sorted(labels.items(), key=lambda item: item[1][0], reverse=True)
        named = [f"{label} {best:.2f}" + (f" x{seen}" if seen > 1 else "") for label, (best, seen) in ranked]
        more = len(named) - TOP_LABELS
        line += f" ({', '.join(named[:TOP_LABELS])}{f', +{more} more labels' if more > 0 else ''})"
    return line


class FrameConsole:
    """A result listener that hands every result to `inner` first, then logs its `frame_line`: INFO for a
    processed frame, WARNING for a failed one."""

    def __init__(self, inner: ResultListener) -> None:
        self.inner = inner

    def on_result(self, result: FrameResult) -> None:
        try:
            self.inner.on_result(result)
        finally:
            level = logging.INFO if result.error is None else logging.WARNING
            if log.isEnabledFor(level):
                log.log(level, "%s", frame_line(result))

    def group(self) -> AbstractContextManager[object]:
        return self.inner.group()
