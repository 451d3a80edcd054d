"""Letterbox geometry as Ultralytics does it: aspect kept, pad 114, odd pixel at bottom/right."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inference.vision.preprocess import letterbox, to_tensor

pytestmark = pytest.mark.timeout(10)


def test_wide_frame_is_padded_top_and_bottom_with_the_odd_pixel_at_the_bottom() -> None:
    image = np.zeros((1080, 1920, 3), np.uint8)
    padded, box = letterbox(image, (320, 320))
    assert padded.shape == (320, 320, 3)
    assert box.scale == pytest.approx(320 / 1920)
    # 1080 * 1/6 = 180 rows of image, 140 of padding: 70 on top, 70 below
    assert (box.pad_x, box.pad_y) == (0.0, 70.0)
    assert (padded[:70] == 114).all() and (padded[250:] == 114).all() and (padded[70:250] == 0).all()


def test_odd_padding_goes_to_the_bottom_right() -> None:
    image = np.zeros((101, 200, 3), np.uint8)  # -> 64 x 32.3 -> 32 rows; 32 rows of padding: 16/16
    _, box = letterbox(image, (64, 64))
    assert box.pad_y == 16.0
    image = np.zeros((200, 99, 3), np.uint8)  # -> 31.68 -> 32 wide; 32 px pad -> 16/16
    padded, box = letterbox(np.zeros((90, 200, 3), np.uint8), (65, 64))
    # 200 -> 64 wide, 90 -> 28.8 -> 29 rows; 36 rows padding = 18/18 on 65 high; 65-29 = 36
    assert padded.shape[:2] == (65, 64) and box.pad_y == 18.0


def test_boxes_map_back_exactly() -> None:
    _, box = letterbox(np.zeros((480, 640, 3), np.uint8), (320, 320))
    model_boxes = np.array([[10.0, 50.0, 110.0, 150.0]])  # model pixels
    back = box.to_original(model_boxes)
    assert back.tolist() == [[20.0, 20.0, 220.0, 220.0]]


def test_tensor_is_rgb_chw_float_in_0_1() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 2] = 255  # red in BGR
    t = to_tensor(image)
    assert t.shape == (1, 3, 2, 2) and t.dtype == np.float32
    assert t[0, 0].max() == pytest.approx(1.0) and t[0, 2].max() == 0.0
    assert to_tensor(image, np.float16).dtype == np.float16
