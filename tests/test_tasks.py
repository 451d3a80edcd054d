"""Classify, segment, pose and OBB models (built here with onnx.helper, outputs known) served by the module's own
path - its ONNX Runtime session, input transform and decoder - against hand-computed expectations: the classify
transform's centre crop, masks by pixel IoU, keypoints and rotated-box corners in original pixels. Each model is
accepted and reported in the twin's `runtime` with its task, layout and classes."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx import TensorProto

from edge_inference.settings import read_settings
from edge_inference.vision.classify import classify_geometry
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.postprocess import DecodeOptions
from tests.onnx_models import build_channel_classifier, build_model, infer

pytestmark = pytest.mark.timeout(60)

OPTS = DecodeOptions(confidence=0.25, iou=0.45, max_detections=100)


def served(tmp_path: Path, model: Path, **env: str) -> OnnxModel:
    return OnnxModel(read_settings({"MODEL_PATH": str(model), "STATE_DIR": str(tmp_path / "state"), **env}))


def pixel_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# ------------------------------------------------------------------------------------------------- classify


def stripes(width: int = 400, height: int = 200) -> np.ndarray:
    """Red left quarter, green middle half, blue right quarter (BGR)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 4] = (0, 0, 255)
    image[:, width // 4 : 3 * width // 4] = (0, 255, 0)
    image[:, 3 * width // 4 :] = (255, 0, 0)
    return image


def test_classify_transform_geometry_is_shorter_side_then_centre_crop_with_pythons_rounding() -> None:
    # the shorter side to 100, the longer to int(100 * long / short); crop offset int(round((L - 100) / 2))
    assert classify_geometry(400, 200, (100, 100)) == ((200, 100), (50, 0))
    assert classify_geometry(402, 200, (100, 100)) == ((201, 100), (50, 0))  # round(50.5) == 50
    assert classify_geometry(406, 200, (100, 100)) == ((203, 100), (52, 0))  # round(51.5) == 52
    assert classify_geometry(200, 402, (100, 100)) == ((100, 201), (0, 50))
    assert classify_geometry(640, 480, (96, 128)) == ((128, 96), (0, 0))  # non-square input: a plain resize


@pytest.mark.parametrize("softmax_in_graph", [True, False])
def test_classifier_sees_the_centre_crop_not_a_letterbox(tmp_path: Path, softmax_in_graph: bool) -> None:
    # given a classifier whose class scores are the mean R, G, B it is given, and a frame whose centre half is green
    model = served(tmp_path, build_channel_classifier(tmp_path / "cls.onnx", softmax=softmax_in_graph))
    result = infer(model, stripes(), OPTS).classification
    # then it was given the green centre only: means (0, 1, 0), softmax (0.212, 0.576, 0.212); a letterbox would
    # have given it all three stripes and grey padding: means (0.349, 0.474, 0.349), green at 0.37
    e = math.e
    assert result.top1.label == "green" and result.top1.confidence == pytest.approx(e / (e + 2), abs=0.01)
    assert [c.label for c in result.top5] == ["green", "blue", "red"] or [c.label for c in result.top5] == [
        "green",
        "red",
        "blue",
    ]
    assert sum(c.confidence for c in result.top5) == pytest.approx(1.0, abs=1e-3)  # a softmax either way
    assert model.decoder.logits is (not softmax_in_graph)
    info = model.runtime_info()
    assert (info["task"], info["outputLayout"], info["classes"]) == ("classify", "classify", ["red", "green", "blue"])


def test_classify_keeps_the_twins_classes_and_caps_the_list(tmp_path: Path) -> None:
    model = served(tmp_path, build_channel_classifier(tmp_path / "cls.onnx"))
    only = infer(model, stripes(), DecodeOptions(0.25, 0.45, 100, keep_class_ids=frozenset({0, 2}))).classification
    assert [c.label for c in only.top5] == ["red", "blue"] and only.top1.label == "red"
    capped = infer(model, stripes(), DecodeOptions(0.25, 0.45, 1)).classification
    assert [c.label for c in capped.top5] == ["green"]
    assert infer(model, stripes(), DecodeOptions(0.25, 0.45, 10, keep_class_ids=frozenset())).classification is None


# -------------------------------------------------------------------------------------------------- segment

# A 800x600 frame into a 160x160 input: scale 0.2, 20 px of padding at the top; prototypes at 40x40 (input / 4).
SEG_FRAME = (800, 600)
DISC_CENTRE, DISC_RADIUS = (300.0, 250.0), 100.0  # original pixels: model (60, 70), radius 20


def cone(centre_model: tuple[float, float], radius_model: float) -> np.ndarray:
    """Prototype logits (40x40) that are positive inside a disc: radius minus the distance, in prototype cells,
    placed so that the bilinear upsampling to the 160x160 input puts the disc at `centre_model`."""
    rows, cols = np.mgrid[0:40, 0:40].astype(np.float32)
    cx, cy = ((c + 0.5) / 4 - 0.5 for c in centre_model)
    return radius_model / 4 - np.hypot(cols - cx, rows - cy)


def segment_outputs(end2end: bool) -> list[np.ndarray]:
    protos = np.zeros((1, 4, 40, 40), np.float32)
    protos[0, 0] = cone((60, 70), 20)
    protos[0, 1] = cone((60, 70), 20)
    protos[0, 2] = -1.0  # a mask negative everywhere: its detection is dropped, as Ultralytics drops it
    # (box xyxy in model pixels, score, coefficients): the whole disc; the disc cut by a box starting at its
    # centre (x 60); an empty mask
    dets = [
        ((35, 45, 85, 95), 0.9, (1, 0, 0, 0)),
        ((60, 45, 110, 95), 0.8, (0, 1, 0, 0)),
        ((120, 100, 140, 120), 0.7, (0, 0, 1, 0)),
    ]
    if end2end:  # [1, K, 6 + 4]: x1, y1, x2, y2, score, class, coefficients
        rows = np.zeros((1, 10, 10), np.float32)
        for i, (box, score, coef) in enumerate(dets):
            rows[0, i] = [*box, score, 0, *coef]
        return [rows, protos]
    out = np.zeros((1, 4 + 1 + 4, 16), np.float32)  # [1, 4 + C + E, N]: cx, cy, w, h, score, coefficients
    for i, ((x1, y1, x2, y2), score, coef) in enumerate(dets):
        out[0, :, i] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, score, *coef]
    return [out, protos]


def disc(height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.circle(canvas, (round(DISC_CENTRE[0]), round(DISC_CENTRE[1])), round(DISC_RADIUS), 1, -1)
    return canvas.astype(bool)


def full_mask(mask, height: int, width: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    canvas = np.zeros((height, width), bool)
    x, y = mask.origin
    canvas[y : y + mask.bitmap.shape[0], x : x + mask.bitmap.shape[1]] = mask.bitmap > 0
    return canvas


@pytest.mark.parametrize("end2end", [False, True])
def test_segment_masks_are_the_prototypes_cropped_to_the_box_in_original_pixels(tmp_path: Path, end2end: bool) -> None:
    meta = {"task": "segment", "names": "{0: 'defect'}", "imgsz": "[160, 160]", "end2end": str(end2end)}
    path = build_model(tmp_path / "seg.onnx", segment_outputs(end2end), input_hw=(160, 160), metadata=meta)
    model = served(tmp_path, path)
    assert model.head.proto == 1 and model.head.extras == 4
    frame = np.full((SEG_FRAME[1], SEG_FRAME[0], 3), 90, np.uint8)
    detections = infer(model, frame, OPTS).detections
    # the empty mask's detection is gone; the whole disc and the cut disc remain, best first
    assert [round(d.confidence, 2) for d in detections] == [0.9, 0.8]
    whole, cut = (full_mask(d.mask, SEG_FRAME[1], SEG_FRAME[0]) for d in detections)
    truth = disc(SEG_FRAME[1], SEG_FRAME[0])
    assert pixel_iou(whole, truth) > 0.95
    assert detections[0].mask.area_px == pytest.approx(math.pi * DISC_RADIUS**2, rel=0.04)
    # cropped at prototype resolution (cells from x 60 / 4 = 15), then upsampled: the blend with the zeroed cell
    # 14 is positive from model x 57.5 on, so the cut starts at model pixel 58, original 58 / 0.2 = 290, as
    # Ultralytics' mask does (not at the box's own edge, 300)
    columns = np.arange(SEG_FRAME[0])[None, :]
    assert pixel_iou(cut, truth & (columns >= 290)) > 0.95
    assert cut[:, :290].sum() == 0 and cut[:, 290].any()
    # the polygons trace the disc's outline in original pixels (within a model pixel: 5 px here)
    (outline,) = detections[0].mask.polygons
    radii = [math.dist(p, DISC_CENTRE) for p in outline]
    assert len(outline) >= 8 and max(abs(r - DISC_RADIUS) for r in radii) < 8
    info = model.runtime_info()
    assert (info["task"], info["outputLayout"], info["classes"]) == (
        "segment",
        "end2end" if end2end else "yolov8",
        ["defect"],
    )


# ----------------------------------------------------------------------------------------------------- pose


def pose_outputs(end2end: bool) -> np.ndarray:
    # 3 keypoints (x, y, visibility) in model pixels; the third outside the frame (x past the right edge, y in
    # the padding): clipped to the frame's edge, as Ultralytics clips them
    keypoints = [10, 16, 0.9, 50, 40, 0.3, 70, 2, 0.8]
    if end2end:
        rows = np.zeros((1, 5, 6 + 9), np.float32)
        rows[0, 0] = [22, 22, 42, 42, 0.95, 0, *keypoints]
        return rows
    out = np.zeros((1, 4 + 1 + 9, 8), np.float32)
    out[0, :, 0] = [32, 32, 20, 20, 0.95, *keypoints]
    out[0, :, 1] = [33, 32, 20, 20, 0.5, *keypoints]  # the same person again, lower: suppressed
    return out


@pytest.mark.parametrize("end2end", [False, True])
def test_pose_keypoints_map_back_like_boxes(tmp_path: Path, end2end: bool) -> None:
    meta = {"task": "pose", "names": "{0: 'part'}", "kpt_shape": "[3, 3]", "end2end": str(end2end)}
    model = served(tmp_path, build_model(tmp_path / "pose.onnx", [pose_outputs(end2end)], metadata=meta))
    # 640x480 into 64x64: scale 0.1, 8 px of padding at the top
    (det,) = infer(model, np.zeros((480, 640, 3), np.uint8), OPTS).detections
    assert det.box == pytest.approx((220.0, 140.0, 420.0, 340.0))
    assert [tuple(round(v, 3) for v in k) for k in det.keypoints] == [
        (100.0, 80.0, 0.9),
        (500.0, 320.0, 0.3),
        (640.0, 0.0, 0.8),
    ]
    body = det.as_dict()
    assert body["keypoints"] == [[100.0, 80.0, 0.9], [500.0, 320.0, 0.3], [640.0, 0.0, 0.8]]
    assert model.runtime_info()["task"] == "pose"


# ------------------------------------------------------------------------------------------------------ obb


def obb_outputs(end2end: bool) -> np.ndarray:
    side = 10 * math.sqrt(2)
    boxes = [  # cx, cy, w, h (model pixels), score, class, angle
        (32, 32, 20, 10, 0.9, 0, math.pi / 2),
        (12, 12, side, side, 0.8, 1, math.pi / 4),
        (32.5, 32, 20, 10, 0.7, 0, math.pi / 2),  # nearly the first: suppressed (ProbIoU ~0.97)
    ]
    if end2end:  # [1, K, 7]: cx, cy, w, h, score, class, angle
        rows = np.zeros((1, 5, 7), np.float32)
        for i, b in enumerate(boxes[:2]):
            rows[0, i] = b
        return rows
    out = np.zeros((1, 4 + 2 + 1, 8), np.float32)  # [1, 4 + C + 1, N]: cx, cy, w, h, 2 scores, angle
    for i, (cx, cy, w, h, score, cls, angle) in enumerate(boxes):
        out[0, :4, i] = [cx, cy, w, h]
        out[0, 4 + cls, i] = score
        out[0, 6, i] = angle
    return out


@pytest.mark.parametrize("end2end", [False, True])
def test_obb_corners_and_bound_in_original_pixels(tmp_path: Path, end2end: bool) -> None:
    meta = {"task": "obb", "names": "{0: 'part', 1: 'tray'}", "end2end": str(end2end)}
    model = served(tmp_path, build_model(tmp_path / "obb.onnx", [obb_outputs(end2end)], metadata=meta))
    # 640x640 into 64x64: scale 0.1, no padding
    upright, diamond = infer(model, np.zeros((640, 640, 3), np.uint8), OPTS).detections
    # turned by 90 degrees: the 200 px side runs along y
    assert upright.obb.as_dict() == {"cx": 320.0, "cy": 320.0, "w": 200.0, "h": 100.0, "angle": 1.5708}
    assert [tuple(round(v, 3) for v in c) for c in upright.obb.corners()] == [
        (270.0, 420.0),
        (370.0, 420.0),
        (370.0, 220.0),
        (270.0, 220.0),
    ]
    assert upright.box == pytest.approx((270.0, 220.0, 370.0, 420.0))
    # a square of side 100 * sqrt(2) turned by 45 degrees: a diamond reaching 100 px from its centre (120, 120)
    assert [tuple(round(v, 3) for v in c) for c in diamond.obb.corners()] == [
        (120.0, 220.0),
        (220.0, 120.0),
        (120.0, 20.0),
        (20.0, 120.0),
    ]
    assert diamond.box == pytest.approx((20.0, 20.0, 220.0, 220.0), abs=1e-3)
    body = diamond.as_dict()
    assert body["polygon"] == [[120.0, 220.0], [220.0, 120.0], [120.0, 20.0], [20.0, 120.0]] and "obb" in body
    assert model.runtime_info()["task"] == "obb"


def test_half_precision_segment_model_is_served(tmp_path: Path) -> None:
    # an Ultralytics `half=True` export: fp16 input and fp16 outputs, prototypes too
    meta = {"task": "segment", "names": "{0: 'defect'}", "args": "{'half': True}"}
    path = build_model(
        tmp_path / "seg16.onnx",
        segment_outputs(False),
        input_hw=(160, 160),
        metadata=meta,
        input_type=TensorProto.FLOAT16,
        output_type=TensorProto.FLOAT16,
    )
    model = served(tmp_path, path)
    assert model.input.dtype == np.float16
    detections = infer(model, np.zeros((600, 800, 3), np.uint8), OPTS).detections
    whole = full_mask(detections[0].mask, 600, 800)
    assert pixel_iou(whole, disc(600, 800)) > 0.95
