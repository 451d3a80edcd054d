"""How a candidate's detections compare with the active model's on the same frames (the active model is the
reference: the candidate's precision and recall are measured against it).

Per frame and per class label (labels, not class ids: the two models may number their classes differently),
candidate detections are matched greedily, most confident first, to the unmatched active detection of the same
label with the highest IoU, when it is at least MIN_IOU (0.5). Then, per class and over all classes:

    precision   matched / candidate detections      (how much of what the candidate finds the active finds)
    recall      matched / active detections         (how much of what the active finds the candidate finds)
    agreement   2 x matched / (active + candidate)  (F1: 1.0 when both find the same boxes, 0 when none match)
    meanConfidenceShift   mean of candidate - active confidence over the matched pairs

A ratio whose denominator is 0 is null. `framesAgreeing` counts frames where every detection of each side was
matched. Latencies are kept for the last LATENCY_WINDOW frames (mean and 95th percentile, milliseconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_inference.control.selftest import iou
from edge_inference.entities import Detection

MIN_IOU = 0.5
LATENCY_WINDOW = 1000


def match(
    active: Sequence[Detection], candidate: Sequence[Detection], min_iou: float = MIN_IOU
) -> list[tuple[Detection, Detection]]:
    """(active, candidate) pairs of the same label at IoU >= `min_iou`, each detection in one pair at most."""
    pairs: list[tuple[Detection, Detection]] = []
    free = list(active)
    for cand in sorted(candidate, key=lambda d: -d.confidence):
        best, best_iou = None, min_iou
        for act in free:
            if act.label == cand.label:
                overlap = iou(act.box, cand.box)
                if overlap >= best_iou:
                    best, best_iou = act, overlap
        if best is not None:
            free.remove(best)
            pairs.append((best, cand))
    return pairs


@dataclass
class Tally:
    active: int = 0
    candidate: int = 0
    matched: int = 0
    shift: float = 0.0  # sum of candidate - active confidence over matched pairs

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": _ratio(self.matched, self.candidate),
            "recall": _ratio(self.matched, self.active),
            "agreement": _ratio(2 * self.matched, self.active + self.candidate),
            "activeDetections": self.active,
            "candidateDetections": self.candidate,
            "matched": self.matched,
            "meanConfidenceShift": _ratio(self.shift, self.matched, 4),
        }


def _ratio(num: float, den: int, digits: int = 4) -> float | None:
    return round(num / den, digits) if den else None


class Latencies:
    def __init__(self) -> None:
        self._ms: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def add(self, ms: float) -> None:
        self._ms.append(ms)

    def as_dict(self) -> dict[str, float | None]:
        if not self._ms:
            return {"mean": None, "p95": None}
        values = np.fromiter(self._ms, dtype=np.float64)
        return {"mean": round(float(values.mean()), 2), "p95": round(float(np.percentile(values, 95)), 2)}


class Agreement:
    """The running comparison of one candidate with the active model (not thread-safe: one owner)."""

    def __init__(self) -> None:
        self.frames = 0
        self.frames_agreeing = 0
        self.overall = Tally()
        self.classes: dict[str, Tally] = {}
        self.active_ms = Latencies()
        self.candidate_ms = Latencies()

    def add(
        self, active: Sequence[Detection], candidate: Sequence[Detection], active_ms: float, candidate_ms: float
    ) -> None:
        pairs = match(active, candidate)
        self.frames += 1
        if len(pairs) == len(active) == len(candidate):
            self.frames_agreeing += 1
        for det in active:
            self._tally(det.label).active += 1
        for det in candidate:
            self._tally(det.label).candidate += 1
        for act, cand in pairs:
            tally = self._tally(act.label)
            tally.matched += 1
            tally.shift += cand.confidence - act.confidence
        self.overall.active += len(active)
        self.overall.candidate += len(candidate)
        self.overall.matched += len(pairs)
        self.overall.shift += sum(c.confidence - a.confidence for a, c in pairs)
        self.active_ms.add(active_ms)
        self.candidate_ms.add(candidate_ms)

    def _tally(self, label: str) -> Tally:
        tally = self.classes.get(label)
        if tally is None:
            tally = self.classes[label] = Tally()
        return tally

    def report(self) -> dict[str, Any]:
        overall = self.overall.as_dict()
        return {
            "framesCompared": self.frames,
            "framesAgreeing": self.frames_agreeing,
            "agreement": overall["agreement"],
            "precision": overall["precision"],
            "recall": overall["recall"],
            "meanConfidenceShift": overall["meanConfidenceShift"],
            "perClass": {label: tally.as_dict() for label, tally in sorted(self.classes.items())},
            "latencyMs": {"active": self.active_ms.as_dict(), "candidate": self.candidate_ms.as_dict()},
        }
