"""Decoding each detection output layout into boxes that match hand-computed expectations, and telling the
layouts apart from shapes (the other tasks and the metadata: test_tasks.py, test_heads.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inference.entities import Detection, Letterbox
from edge_inference.errors import ModelError
from edge_inference.vision.heads import Head, read_head
from edge_inference.vision.model_meta import ModelMeta
from edge_inference.vision.postprocess import DecodeOptions, Decoder

pytestmark = pytest.mark.timeout(10)

NAMES = ("scratch", "dent", "spot")
# A 640x480 frame letterboxed into 320x320: scale 0.5, 40 px of padding at the top.
LB = Letterbox(scale=0.5, pad_x=0.0, pad_y=40.0, width=640, height=480)
OPTS = DecodeOptions(confidence=0.5, iou=0.45, max_detections=100)


def decode(layout: str, out: np.ndarray, lb: Letterbox, opts: DecodeOptions, names: tuple[str, ...]) -> list[Detection]:
    classes = {"yolov8": out.shape[0] - 4, "yolov5": out.shape[1] - 5}.get(layout)
    head = Head("detect", layout, classes)  # type: ignore[arg-type]
    return list(Decoder(head, names, (320, 320)).decode([out], lb, opts).detections)


def detect_layout(shape: tuple[int, ...], classes: int | None, end2end: bool | None = None) -> str:
    return read_head(ModelMeta(end2end=end2end), [shape], classes).layout


def boxes(dets: list) -> list[tuple[str, float, list[float]]]:
    return [(d.label, round(d.confidence, 3), [round(v, 1) for v in d.box]) for d in dets]


def test_yolov8_layout_maps_boxes_to_original_pixels() -> None:
    out = np.zeros((4 + 3, 5), np.float32)
    out[:, 0] = [100, 140, 40, 20, 0.9, 0.1, 0.0]  # scratch at cx100 cy140 w40 h20 (model px)
    out[:, 1] = [200, 200, 20, 20, 0.2, 0.8, 0.1]  # dent
    out[:, 2] = [50, 50, 10, 10, 0.3, 0.2, 0.4]  # below threshold
    got = boxes(decode("yolov8", out, LB, OPTS, NAMES))
    # x1 = (100-20-0)/0.5 = 160, y1 = (140-10-40)/0.5 = 180, x2 = 240, y2 = 220
    assert got == [("scratch", 0.9, [160.0, 180.0, 240.0, 220.0]), ("dent", 0.8, [380.0, 300.0, 420.0, 340.0])]


def test_yolov5_layout_multiplies_objectness() -> None:
    out = np.zeros((3, 5 + 3), np.float32)
    out[0] = [100, 140, 40, 20, 0.9, 1.0, 0.0, 0.0]  # 0.9
    out[1] = [200, 200, 20, 20, 0.6, 0.0, 0.9, 0.0]  # 0.54
    out[2] = [200, 200, 20, 20, 0.5, 0.0, 0.9, 0.0]  # 0.45: below
    got = boxes(decode("yolov5", out, LB, OPTS, NAMES))
    assert got == [("scratch", 0.9, [160.0, 180.0, 240.0, 220.0]), ("dent", 0.54, [380.0, 300.0, 420.0, 340.0])]


def test_end2end_and_rows_layouts_take_corners_and_class_ids() -> None:
    out = np.array([[80, 120, 120, 130, 0.95, 2], [0, 0, 0, 0, 0.0, 0], [10, 50, 20, 60, 0.7, 1]], np.float32)
    expected = [("spot", 0.95, [160.0, 160.0, 240.0, 180.0]), ("dent", 0.7, [20.0, 20.0, 40.0, 40.0])]
    assert boxes(decode("end2end", out, LB, OPTS, NAMES)) == expected
    assert boxes(decode("rows", out, LB, OPTS, NAMES)) == expected


def test_class_aware_nms_keeps_overlapping_boxes_of_different_classes_unless_agnostic() -> None:
    out = np.zeros((7, 3), np.float32)
    out[:, 0] = [100, 100, 40, 40, 0.9, 0, 0]
    out[:, 1] = [102, 100, 40, 40, 0.8, 0, 0]  # same class, IoU ~0.9: suppressed
    out[:, 2] = [101, 100, 40, 40, 0, 0.85, 0]  # other class: kept unless agnostic
    aware = decode("yolov8", out, LB, OPTS, NAMES)
    assert [d.label for d in aware] == ["scratch", "dent"]
    agnostic = decode("yolov8", out, LB, DecodeOptions(0.5, 0.45, 100, agnostic=True), NAMES)
    assert [d.label for d in agnostic] == ["scratch"]


def test_max_detections_class_filter_and_clipping() -> None:
    out = np.zeros((7, 4), np.float32)
    out[:, 0] = [10, 60, 40, 40, 0.9, 0, 0]  # extends left of the frame: clipped to x1 = 0
    out[:, 1] = [200, 200, 20, 20, 0.8, 0, 0]
    out[:, 2] = [300, 200, 20, 20, 0, 0.7, 0]
    out[:, 3] = [250, 100, 20, 20, 0, 0, 0.6]
    top2 = decode("yolov8", out, LB, DecodeOptions(0.5, 0.45, 2), NAMES)
    assert [d.confidence for d in top2] == pytest.approx([0.9, 0.8])
    assert top2[0].box[0] == 0.0
    only_spot = decode("yolov8", out, LB, DecodeOptions(0.5, 0.45, 10, keep_class_ids=frozenset({2})), NAMES)
    assert [d.label for d in only_spot] == ["spot"]


@pytest.mark.parametrize(
    ("shape", "classes", "end2end", "layout"),
    [
        ((1, 84, 8400), 80, None, "yolov8"),
        ((1, 7, 2100), 3, None, "yolov8"),
        ((1, 25200, 85), 80, None, "yolov5"),
        ((1, 300, 6), 80, None, "end2end"),
        ((1, 300, 6), 80, True, "end2end"),
        ((1, 6, 8400), 2, None, "yolov8"),  # 2 classes: 4+2 rows, not an end-to-end output
        ((1, 84, 8400), None, None, "yolov8"),
        ((1, 25200, 85), None, None, "yolov5"),
        ((1, 300, 6), None, None, "end2end"),
        ((100, 6), None, None, "rows"),
    ],
)
def test_layout_detection(shape: tuple[int, ...], classes: int | None, end2end: bool | None, layout: str) -> None:
    assert detect_layout(shape, classes, end2end) == layout


def test_layout_that_fits_no_class_count_is_refused_clearly() -> None:
    with pytest.raises(ModelError, match="outputs 16 classes but 3 class names"):
        detect_layout((1, 20, 100), 3)
    with pytest.raises(ModelError, match="does not fit 3 classes"):
        detect_layout((1, 3, 3), 3)
    with pytest.raises(ModelError, match=r"outputs \[1, 2, 3, 4\] and no `task` metadata"):
        detect_layout((1, 2, 3, 4), 3)
