"""Annotated frames draw each task where its result says: boxes, translucent masks, rotated boxes, keypoints (hidden
ones not), a classifier's top classes; on a frame decoded at reduced size, everything at that size."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inference.entities import Classification, ClassScore, Detection, Mask, RotatedBox
from edge_inference.vision.annotate import MASK_ALPHA, PALETTE, draw

pytestmark = pytest.mark.timeout(10)

GREY = 100


def canvas(width: int = 400, height: int = 300) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def changed(before: np.ndarray, after: np.ndarray, x: int, y: int) -> bool:
    return bool(np.abs(after[y, x].astype(int) - before[y, x].astype(int)).max() > 0)


def test_a_mask_is_tinted_not_painted_over_and_only_inside() -> None:
    bitmap = np.zeros((40, 60), np.uint8)
    bitmap[10:30, 10:50] = 1
    det = Detection("defect", 2, 0.9, (100.0, 100.0, 160.0, 140.0), mask=Mask((), 800, bitmap, (100, 100)))
    image = canvas()
    drawn = draw(image, (det,))
    expected = np.round(GREY * (1 - MASK_ALPHA) + np.array(PALETTE[2]) * MASK_ALPHA)
    assert np.abs(drawn[120, 130].astype(int) - expected).max() <= 1  # inside: a blend of frame and colour
    assert not changed(image, drawn, 105, 125)  # in the box, outside the mask (and off the box's edge)
    assert not changed(image, drawn, 300, 250)


def test_rotated_boxes_are_drawn_as_their_corners_not_their_bound() -> None:
    diamond = RotatedBox(200.0, 150.0, 100 * np.sqrt(2), 100 * np.sqrt(2), np.pi / 4)  # corners 100 px from centre
    det = Detection("part", 0, 0.8, (100.0, 50.0, 300.0, 250.0), obb=diamond)
    image = canvas()
    drawn = draw(image, (det,))
    assert changed(image, drawn, 250, 100)  # on the edge from (200, 50) to (300, 150)
    assert not changed(image, drawn, 290, 240)  # a corner of the axis-aligned bound: no rectangle drawn
    assert not changed(image, drawn, 200, 150)  # the centre


def test_keypoints_are_dots_and_hidden_ones_are_not_drawn() -> None:
    det = Detection("person", 0, 0.9, (50.0, 50.0, 350.0, 250.0), keypoints=((120.0, 200.0, 0.9), (300.0, 200.0, 0.1)))
    image = canvas()
    drawn = draw(image, (det,))
    assert changed(image, drawn, 120, 200) and not changed(image, drawn, 300, 200)


def test_a_classification_is_written_top_left() -> None:
    top = ClassScore("ng", 1, 0.97)
    image = canvas()
    drawn = draw(image, (), Classification(top, (top, ClassScore("ok", 0, 0.03))))
    assert (drawn[:60, :120] != image[:60, :120]).any() and (drawn[150:, 200:] == image[150:, 200:]).all()


def test_on_a_reduced_decode_everything_is_drawn_at_that_size() -> None:
    det = Detection("scratch", 0, 0.9, (200.0, 200.0, 400.0, 300.0), keypoints=((300.0, 250.0, 1.0),))
    image = canvas(400, 300)  # a 800x600 frame decoded at half size
    drawn = draw(image, (det,), scale=0.5)
    assert changed(image, drawn, 150, 125)  # the keypoint at (300, 250) of the frame
    assert changed(image, drawn, 100, 140) and not changed(image, drawn, 250, 200)  # the box's left edge at x 100
