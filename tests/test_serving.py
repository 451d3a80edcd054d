"""Which model serves (vision/serving.py): the swap, the probation that keeps the old model at hand, the automatic
fall-back, and a prepared frame letterboxed again for another model's input, all on real ONNX Runtime sessions."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge_inference.entities import Letterbox
from edge_inference.errors import ModelError
from edge_inference.settings import read_settings
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.preprocess import InputTransform, prepare_frame
from edge_inference.vision.serving import ModelSlot, Probation, SlotEvent, fits, refit, run_one
from tests.onnx_models import build_constant_model, yolov8_output

pytestmark = pytest.mark.timeout(30)


def model(tmp_path: Path, name: str, hw: tuple[int, int]) -> OnnxModel:
    path = build_constant_model(tmp_path / f"{name}.onnx", yolov8_output([(20, 20, 8, 8)], [[0.9]]), input_hw=hw)
    return OnnxModel(read_settings({"MODEL_PATH": str(path), "STATE_DIR": str(tmp_path), "EXECUTION_PROVIDERS": "cpu"}))


def test_probation_ends_after_enough_frames_or_time(tmp_path: Path) -> None:
    old, new = model(tmp_path, "old", (64, 64)), model(tmp_path, "new", (96, 96))
    events: list[SlotEvent] = []
    slot = ModelSlot(old, Probation(frames=10, seconds=0.5, failures=3))
    slot.subscribe(events.append)
    assert slot.swap(new) is old and slot.active is new and slot.previous is old
    slot.record(new, served=9, failed_over=0)
    assert slot.previous is old
    slot.record(new, served=1, failed_over=0)
    assert slot.previous is None and [e.change for e in events] == ["swapped", "confirmed"]
    slot.swap(old)
    time.sleep(0.6)
    slot.tick()
    assert slot.previous is None and events[-1].change == "confirmed"


def test_failures_in_a_row_on_probation_fall_back(tmp_path: Path) -> None:
    old, new = model(tmp_path, "old", (64, 64)), model(tmp_path, "new", (64, 64))
    events: list[SlotEvent] = []
    slot = ModelSlot(old, Probation(frames=100, seconds=600, failures=3))
    slot.subscribe(events.append)
    slot.swap(new)
    slot.record(new, served=0, failed_over=2)
    slot.record(new, served=1, failed_over=0)  # a good frame breaks the run
    slot.record(new, served=0, failed_over=2)
    assert slot.active is new
    slot.record(new, served=0, failed_over=1)
    assert slot.active is old and slot.previous is None
    assert events[-1].change == "fellBack" and events[-1].other is new and "3 frames in a row" in events[-1].reason
    assert slot.fall_back("again") is False  # nothing at hand any more
    slot.swap(new, probation=False)
    slot.record(new, served=0, failed_over=99)
    assert slot.active is new  # not on probation: no fall-back


def test_refit_letterboxes_for_another_input_as_preparing_would(tmp_path: Path) -> None:
    small, large = model(tmp_path, "small", (64, 64)), model(tmp_path, "large", (128, 96))
    image = np.zeros((120, 200, 3), np.uint8)
    image[40:80, 60:140] = (0, 0, 255)  # a red block
    tensor, box = prepare_frame(image, (200, 120), small.transform)
    assert fits(tensor, small.transform, small) and not fits(tensor, small.transform, large)
    assert fits(tensor, None, small) and not fits(tensor, None, large)  # no transform: by size and type
    refitted = refit(tensor, box, small.transform, large)
    assert refitted is not None
    again, geometry = refitted
    direct, expected = prepare_frame(image, (200, 120), large.transform)
    assert again.shape == direct.shape and fits(again, None, large)
    assert geometry.width == 200 and geometry.height == 120
    assert geometry.scale == pytest.approx(expected.scale, rel=0.05)
    assert (geometry.pad_x, geometry.pad_y) == pytest.approx((expected.pad_x, expected.pad_y), abs=1.5)
    assert float(np.abs(again - direct).mean()) < 0.05  # the same picture, once more resized
    # boxes found on the refitted tensor map back to the same original pixels
    corner = np.array([[geometry.pad_x, geometry.pad_y, 96.0, 64.0]], np.float32)
    assert geometry.to_original(corner)[0][:2] == pytest.approx([0.0, 0.0], abs=1.0)
    same = refit(tensor, box, small.transform, small)
    assert same is not None and same[0] is tensor and same[1] is box
    same_box = same[1]
    assert isinstance(same_box, Letterbox)


def test_a_classifiers_crop_is_never_refitted(tmp_path: Path) -> None:
    """A centre crop lost the picture outside it: a frame made for a classifier (or made for a detector and met
    by a classifier) is not remade; the batcher runs it on the model it was made for."""
    detector = model(tmp_path, "det", (64, 64))
    image = np.full((120, 200, 3), 90, np.uint8)
    crop = InputTransform("classify", (64, 64))
    tensor, box = prepare_frame(image, (200, 120), crop)
    assert refit(tensor, box, crop, detector) is None
    with pytest.raises(ModelError, match="made for a classify model"):
        run_one(detector, tensor, box, crop)
    # the same size and type, but made by the letterbox: taken as it is
    made, made_box = prepare_frame(image, (200, 120), detector.transform)
    assert refit(made, made_box, detector.transform, detector) == (made, made_box)
