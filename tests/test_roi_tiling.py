"""Regions of interest, per-class thresholds and tiling, by hand-computed geometry: which detections a profile's
polygons keep and its exclusion zones drop, boxes (masks, keypoints, rotated boxes) moved from a region to the frame,
the tile plan, and the merge that joins boxes cut by tile edges; then the demo model on a synthetic frame whose
defects straddle tile edges (one box out per defect, not two halves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.run_bench import load_module_model
from edge_inference.entities import Detection, Letterbox, Mask, RotatedBox
from edge_inference.ops.profiles import Profile, Roi, Tiling
from edge_inference.vision import roi as regions
from edge_inference.vision import tiling, views
from edge_inference.vision.heads import Head
from edge_inference.vision.postprocess import DecodeOptions, Decoder
from edge_inference.vision.preprocess import InputTransform
from tools.synthetic import generate_frame

pytestmark = pytest.mark.timeout(60)

DEMO = Path(__file__).resolve().parents[1] / "modules" / "edge-inference" / "models" / "demo-defects.onnx"
SQUARE = ((0.0, 0.0), (20.0, 0.0), (20.0, 20.0), (0.0, 20.0))


def det(
    box: tuple[float, float, float, float], label: str = "scratch", class_id: int = 0, conf: float = 0.9
) -> Detection:
    return Detection(label, class_id, conf, box)


def test_the_share_of_a_box_inside_polygons_is_exact() -> None:
    assert regions.inside_fraction((10, 10, 30, 30), (SQUARE,)) == 0.25  # 10x10 of 20x20
    triangle = ((0.0, 0.0), (40.0, 0.0), (0.0, 40.0))
    assert regions.inside_fraction((0, 0, 20, 20), (triangle,)) == 1.0
    assert regions.inside_fraction((20, 0, 40, 20), (triangle,)) == pytest.approx(0.5)  # the diagonal halves it
    assert regions.inside_fraction((50, 50, 60, 60), (SQUARE,)) == 0.0


def test_filter_keeps_detections_overlapping_by_min_overlap_and_exclusion_zones_drop() -> None:
    # relative units on a 200x100 frame: the left half is the ROI, a 20x20 corner of it an exclusion zone
    roi = Roi(
        polygons=(((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)),),
        units="relative",
        mode="filter",
        min_overlap=0.5,
        exclude=(((0.0, 0.0), (0.1, 0.0), (0.1, 0.2), (0.0, 0.2)),),
    )
    found = (
        det((40, 40, 60, 60)),  # inside the ROI
        det((90, 40, 110, 60)),  # half inside: 0.5 >= 0.5, kept
        det((95, 40, 115, 60)),  # a quarter inside: dropped
        det((0, 0, 10, 10)),  # inside the exclusion zone: dropped
        det((15, 15, 25, 25)),  # a quarter in the exclusion zone: kept
        det((150, 40, 170, 60)),  # outside the ROI
    )
    kept = regions.judged_by_roi(found, roi, 200, 100)
    assert [d.box for d in kept] == [(40, 40, 60, 60), (90, 40, 110, 60), (15, 15, 25, 25)]
    only_zones = Roi(exclude=roi.exclude)
    assert len(regions.judged_by_roi(found, only_zones, 200, 100)) == len(found) - 1


def test_crop_is_the_bounding_rectangle_of_the_polygons_in_whole_pixels() -> None:
    roi = Roi(polygons=(((0.1, 0.2), (0.4, 0.2), (0.3, 0.55)), ((0.6, 0.6), (0.7, 0.6), (0.7, 0.7))), mode="crop")
    assert regions.crop_rect(roi, 1000, 500) == (100, 100, 700, 350)
    assert regions.crop_rect(Roi(polygons=roi.polygons, mode="filter"), 1000, 500) is None


def test_a_region_crop_maps_boxes_masks_keypoints_and_rotated_boxes_back_exactly() -> None:
    # a 400x200 crop at (300, 100) of a 1000x800 frame, letterboxed into 320x320: scale 0.8, 80 px padding on top
    head = Head("detect", "yolov8", 1)  # type: ignore[arg-type]
    out = np.zeros((5, 10), dtype=np.float32)
    out[:, 0] = [160, 160, 80, 40, 0.9]  # centre 160,160, 80x40 in model pixels
    image = np.full((800, 1000, 3), 90, dtype=np.uint8)
    profile = Profile(
        "crop",
        "**",
        roi=Roi(
            polygons=(((300.0, 100.0), (700.0, 100.0), (700.0, 300.0), (300.0, 300.0)),), units="pixels", mode="crop"
        ),
    )
    cut = views.cut(image, _transform(), profile)
    assert [(v.origin, v.letterbox) for v in cut] == [((300, 100), Letterbox(0.8, 0.0, 80.0, 400, 200))]
    decoded = views.read(
        Decoder(head, ("scratch",), (320, 320)), [(out,)], cut, DecodeOptions(0.5, 0.45, 300), profile, (1000, 800)
    )
    # model x 120..200 -> crop 150..250 -> frame 450..550; model y 140..180 -> crop (140-80)/0.8 = 75..125 -> 175..225
    assert [d.box for d in decoded.detections] == [(450.0, 175.0, 550.0, 225.0)]
    moved = regions.shifted(
        Detection(
            "x",
            0,
            0.9,
            (1, 2, 3, 4),
            mask=Mask((((1.0, 2.0), (3.0, 4.0), (1.0, 4.0)),), 3, None, (1, 2)),
            keypoints=((5.0, 6.0, 0.8),),
            obb=RotatedBox(7, 8, 2, 1, 0.5),
        ),
        300,
        100,
    )
    assert moved.box == (301, 102, 303, 104) and moved.mask is not None and moved.mask.origin == (301, 102)
    assert moved.mask.polygons == (((301.0, 102.0), (303.0, 104.0), (301.0, 104.0)),)
    assert moved.keypoints == ((305.0, 106.0, 0.8),) and moved.obb == RotatedBox(307, 108, 2, 1, 0.5)


def _transform() -> InputTransform:
    return InputTransform("letterbox", (320, 320))


def test_per_class_thresholds_replace_the_confidence_for_their_class() -> None:
    head = Head("detect", "yolov8", 2)  # type: ignore[arg-type]
    out = np.zeros((6, 4), dtype=np.float32)
    out[:4, :] = [[20, 60, 100, 140], [20, 20, 20, 20], [10, 10, 10, 10], [10, 10, 10, 10]]
    out[4:, 0] = [0.4, 0.0]  # scratch 0.4
    out[4:, 1] = [0.0, 0.4]  # dent 0.4
    out[4:, 2] = [0.6, 0.0]  # scratch 0.6
    out[4:, 3] = [0.0, 0.6]  # dent 0.6
    options = DecodeOptions(0.5, 0.45, 300, class_thresholds=((0, 0.3), (1, 0.7)))
    decoded = Decoder(head, ("scratch", "dent"), (320, 320)).decode([out], Letterbox(1, 0, 0, 320, 320), options)
    assert sorted((d.label, d.confidence) for d in decoded.detections) == [
        ("scratch", pytest.approx(0.4)),
        ("scratch", pytest.approx(0.6)),
    ]  # scratch over 0.3, dent would need 0.7


def test_tiles_cover_the_frame_with_the_overlap_and_end_on_its_edges() -> None:
    assert tiling.tile_starts(1000, 320, 0.2) == [0, 227, 453, 680]  # 4 tiles, steps of 226.7 <= 256
    tiles = tiling.plan(3840, 2160, Tiling(mode="always"), (320, 320))
    assert len(tiles) == 15 * 9 and tiles[-1] == (3520, 1840, 3840, 2160)
    assert tiling.plan(640, 640, Tiling(mode="auto"), (320, 320)) == []  # 2x the input: not more than autoFactor
    assert len(tiling.plan(700, 640, Tiling(mode="auto"), (320, 320))) == 9
    assert tiling.plan(3840, 2160, Tiling(mode="off"), (320, 320)) == []


def test_a_box_cut_by_a_tile_edge_comes_out_whole_and_duplicates_once() -> None:
    frame = (1000, 400)
    left, right = (0, 0, 320, 320), (256, 0, 576, 320)  # tiles overlapping over x 256..320
    views_found = [
        # an object 240..340: the left tile sees 240..320 (cut by its right edge), the right tile sees it whole
        tiling.ViewDetections((det((240, 50, 319, 80), conf=0.7),), left, tile=True),
        tiling.ViewDetections((det((240, 50, 340, 80), conf=0.8),), right, tile=False),
    ]
    merged = tiling.merge(views_found, frame, agnostic=False, max_detections=300)
    assert [d.box for d in merged] == [(240, 50, 340, 80)]
    # an object 200..400 larger than the overlap: each tile sees a piece cut by its edge -> one box 200..400
    halves = [
        tiling.ViewDetections((det((200, 100, 320, 140), conf=0.6),), left, tile=True),
        tiling.ViewDetections((det((256, 100, 400, 140), conf=0.8),), right, tile=True),
        tiling.ViewDetections((det((262, 100, 300, 140), "dent", 1, 0.9),), right, tile=True),  # another class stays
    ]
    merged = tiling.merge(halves, frame, agnostic=False, max_detections=300)
    assert sorted((d.label, d.box, d.confidence) for d in merged) == [
        ("dent", (262, 100, 300, 140), 0.9),
        ("scratch", (200, 100, 400, 140), 0.8),
    ]
    # whole duplicates from two tiles (and the full-frame pass) are one
    twice = [
        tiling.ViewDetections((det((270, 200, 300, 230), conf=0.8),), left, tile=True),
        tiling.ViewDetections((det((271, 201, 300, 231), conf=0.7),), right, tile=True),
        tiling.ViewDetections((det((268, 199, 301, 230), conf=0.5),), (0, 0, 1000, 400), tile=False),
    ]
    assert [d.confidence for d in tiling.merge(twice, frame, agnostic=False, max_detections=300)] == [0.8]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [1, 6, 10, 29])  # frames with 2 or 3 defects across tile edges each
def test_demo_model_defects_straddling_tile_edges_come_out_as_one_box_each(tmp_path: Path, seed: int) -> None:
    model = load_module_model(DEMO, "cpu", tmp_path)
    rng = np.random.default_rng(seed)
    image, truth = generate_frame(rng, 1280, 640, max_defects=8, min_defects=8, defect_scale=320)
    profile = Profile("tiles", "**", tiling=Tiling(mode="always", overlap=0.25, full_frame=False))
    cut = views.cut(image, model.transform, profile)
    edges = {v.origin[0] for v in cut} | {v.origin[0] + v.letterbox.width for v in cut}
    straddling = [t for t in truth if any(t.box[0] < e < t.box[2] for e in edges if 0 < e < 1280)]
    assert straddling, "the frame has defects across tile edges"
    outputs = [tuple(o[0:1][0] for o in model.run(v.tensor)) for v in cut]
    found = views.read(model.decoder, outputs, cut, DecodeOptions(0.25, 0.45, 300), profile, (1280, 640)).detections
    for defect in truth:
        near = [d for d in found if d.label == defect.label and _iou(d.box, defect.box) > 0.1]
        assert len(near) == 1, (defect, near)  # one box per defect, straddling ones included
        assert _iou(near[0].box, defect.box) >= 0.5, (defect, near)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
