"""Comparing a candidate's detections with the active model's (rollout/agreement.py): matches by label at IoU
0.5, each detection in one pair; per-class and overall precision, recall, agreement and confidence shift."""

from __future__ import annotations

import pytest

from edge_inference.entities import Detection
from edge_inference.rollout.agreement import Agreement, match

pytestmark = pytest.mark.timeout(10)


def det(label: str, confidence: float, x: float) -> Detection:
    return Detection(label, 0, confidence, (x, 10.0, x + 20.0, 30.0))


def test_matches_need_the_same_label_and_iou_half() -> None:
    active = [det("scratch", 0.9, 0), det("dent", 0.8, 100)]
    assert len(match(active, [det("scratch", 0.7, 2)])) == 1  # IoU 0.82
    assert match(active, [det("scratch", 0.7, 12)]) == []  # IoU 0.25
    assert match(active, [det("dent", 0.7, 0)]) == []  # same place, another label
    # one active detection pairs with one candidate detection at most: the most confident candidate wins
    pairs = match([det("scratch", 0.9, 0)], [det("scratch", 0.5, 1), det("scratch", 0.95, 0)])
    assert [(a.confidence, c.confidence) for a, c in pairs] == [(0.9, 0.95)]


def test_a_copy_agrees_fully_and_a_shift_not_at_all() -> None:
    active = [det("scratch", 0.9, 0), det("dent", 0.6, 100)]
    same = Agreement()
    for _ in range(3):
        same.add(active, active, 4.0, 5.0)
    report = same.report()
    assert (report["agreement"], report["precision"], report["recall"]) == (1.0, 1.0, 1.0)
    assert report["framesCompared"] == report["framesAgreeing"] == 3 and report["meanConfidenceShift"] == 0.0
    assert report["latencyMs"] == {"active": {"mean": 4.0, "p95": 4.0}, "candidate": {"mean": 5.0, "p95": 5.0}}
    shifted = Agreement()
    shifted.add(active, [det("dent", 0.9, 0), det("scratch", 0.6, 100)], 4.0, 5.0)
    report = shifted.report()
    assert (report["agreement"], report["precision"], report["recall"]) == (0.0, 0.0, 0.0)
    assert report["meanConfidenceShift"] is None and report["perClass"]["dent"]["candidateDetections"] == 1


def test_per_class_precision_recall_and_confidence_shift() -> None:
    agreement = Agreement()
    # scratch: the candidate finds both and one more; dent: it misses one of two, 0.1 less sure
    agreement.add(
        [det("scratch", 0.9, 0), det("scratch", 0.8, 50), det("dent", 0.7, 100), det("dent", 0.7, 150)],
        [det("scratch", 0.9, 0), det("scratch", 0.8, 50), det("scratch", 0.6, 200), det("dent", 0.6, 100)],
        1.0,
        2.0,
    )
    classes = agreement.report()["perClass"]
    assert classes["scratch"]["precision"] == pytest.approx(2 / 3, abs=1e-4) and classes["scratch"]["recall"] == 1.0
    assert classes["dent"]["precision"] == 1.0 and classes["dent"]["recall"] == 0.5
    assert classes["dent"]["meanConfidenceShift"] == pytest.approx(-0.1)
    assert agreement.report()["agreement"] == pytest.approx(2 * 3 / 8)
    empty = Agreement()
    empty.add([], [], 1.0, 1.0)
    assert empty.report()["agreement"] is None and empty.report()["framesAgreeing"] == 1
